"""ivfusion.data: the one pair discovery (find_pairs) and the one pair reader (load_pair)."""
import shutil

import cv2
import numpy as np
import pytest

from ivfusion import io
from ivfusion.data import find_pairs, load_pair
from ivfusion.metrics import read_grey


def test_find_pairs_matches_by_stem_in_a_dataset_folder(pair_folder):
    (pair_folder / "ir" / "extra.png").write_bytes((pair_folder / "ir" / sorted(
        p.name for p in (pair_folder / "ir").iterdir())[0]).read_bytes())
    pairs = find_pairs(pair_folder)
    stems = [s for s, _, _ in pairs]
    assert len(stems) == 4 and stems == sorted(stems) and "extra" not in stems
    for stem, ir, vi in pairs:
        assert ir.parent.name == "ir" and vi.parent.name == "vi" and ir.stem == vi.stem == stem
    assert list(pairs.infrared_only) == ["extra"] and pairs.visible_only == {}


def test_find_pairs_takes_separate_folders(pair_folder):
    assert find_pairs(infrared=pair_folder / "ir", visible=pair_folder / "vi") == find_pairs(pair_folder)


def test_find_pairs_says_the_names_differ(tmp_path, pair_folder):
    ir, vi = tmp_path / "ir", tmp_path / "vi"
    ir.mkdir(), vi.mkdir()
    for i, p in enumerate(sorted((pair_folder / "ir").iterdir())):
        shutil.copy(p, ir / f"ir_{i:03d}{p.suffix}")
        shutil.copy(pair_folder / "vi" / p.name, vi / f"vi_{i:03d}{p.suffix}")
    with pytest.raises(ValueError) as exc:
        find_pairs(tmp_path)
    msg = str(exc.value)
    assert "no pairs found" in msg and "file names" in msg and "differ" in msg
    assert "ir_000" in msg and "vi_000" in msg and "(4 in all)" in msg
    assert find_pairs(tmp_path, allow_empty=True) == []


def test_find_pairs_names_an_empty_or_missing_folder(tmp_path, pair_folder):
    (tmp_path / "ir").mkdir()
    shutil.copytree(pair_folder / "vi", tmp_path / "vi")
    with pytest.raises(ValueError, match=r"infrared folder .*ir holds no images \(accepted suffixes"):
        find_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"expected sub-folders holding the pairs \(ir/ and vi/"):
        find_pairs(tmp_path / "vi")
    with pytest.raises(FileNotFoundError, match="visible folder not found"):
        find_pairs(infrared=tmp_path / "ir", visible=tmp_path / "nope")
    with pytest.raises(ValueError, match="not both"):
        find_pairs(tmp_path, infrared=tmp_path / "ir")


def test_load_pair_forms(shared_dir):
    d = shared_dir / "data" / "roadscene" / "test"
    ir_path, vi_path = d / "ir" / "FLIR_00211.jpg", d / "vi" / "FLIR_00211.jpg"
    vis, ir = load_pair(ir_path, vi_path, form="image")
    np.testing.assert_array_equal(vis, io.read_image(vi_path))
    np.testing.assert_array_equal(ir, io.read_image(ir_path))
    y, ir_f = load_pair(ir_path, vi_path)
    assert y.dtype == ir_f.dtype == np.float32 and y.shape == ir_f.shape == vis.shape[:2]
    # the network's Y: OpenCV's float YCrCb of the 8-bit image, not rounded
    expected_y = cv2.cvtColor(vis.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)[..., 0]
    np.testing.assert_array_equal(y, expected_y)
    assert 0.0 <= ir_f.min() and ir_f.max() <= 1.0
    grey_vis, grey_ir = load_pair(ir_path, vi_path, form="grey")
    bgr = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(grey_vis, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64))
    np.testing.assert_array_equal(grey_ir, read_grey(ir_path))
    with pytest.raises(ValueError, match="unknown pair form"):
        load_pair(ir_path, vi_path, form="rgb")


def test_load_pair_names_both_sizes(tmp_path, shared_dir):
    d = shared_dir / "data" / "roadscene" / "test"
    img = cv2.imread(str(d / "ir" / "FLIR_00211.jpg"), cv2.IMREAD_UNCHANGED)
    h, w = img.shape[:2]
    assert cv2.imwrite(str(tmp_path / "small.png"), img[: h - 5])
    with pytest.raises(io.ImageError, match=f"visible image is {w}x{h} but the infrared image small.png is {w}x{h - 5}"):
        load_pair(tmp_path / "small.png", d / "vi" / "FLIR_00211.jpg")
    vis, ir = load_pair(tmp_path / "small.png", d / "vi" / "FLIR_00211.jpg", form="image", same_size=False)
    assert ir.shape[:2] == (h - 5, w) and vis.shape[:2] == (h, w)
