"""Reading images, colour handling and every bad-input case of the io layer."""
import cv2
import numpy as np
import pytest

from ivfusion import ImageError, io, read_image


def test_read_image_is_rgb_and_matches_opencv(shared_dir):
    path = shared_dir / "data" / "roadscene" / "test" / "vi" / "FLIR_00211.jpg"
    rgb = read_image(path)
    assert rgb.shape == (301, 496, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, cv2.imread(str(path))[..., ::-1])


def test_msrs_infrared_with_equal_channels_reads_as_grey(shared_dir):
    ir = read_image(shared_dir / "data" / "msrs" / "train" / "ir" / "00001D.png")
    grey, notices = io.infrared_to_grey(ir)
    assert grey.shape == ir.shape[:2] and not notices
    ref = ir[..., 0] if ir.ndim == 3 else ir
    np.testing.assert_allclose(grey, ref / 255.0, atol=1e-7)


def test_luminance_is_opencv_y_in_float_without_rounding(pairs):
    _, vis, _ = pairs[0]
    y = io.visible_to_ycrcb(vis)[..., 0]
    expected = (vis.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0
    np.testing.assert_allclose(y, expected, atol=2e-6)
    assert np.unique(np.round(y * 255, 3) % 1).size > 1  # really not rounded to 8 bits


def test_colour_restoration_round_trip(pairs):
    for _, vis, _ in pairs:
        ycc = io.visible_to_ycrcb(vis)
        back = io.restore_colour(ycc[..., 0], ycc)
        assert back.dtype == np.uint8 and back.shape == vis.shape
        assert np.abs(back.astype(int) - vis).max() <= 1


def test_grey_visible_gets_neutral_chroma():
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (16, 1))
    ycc = io.visible_to_ycrcb(grey)
    rgb = io.restore_colour(ycc[..., 0], ycc)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], grey)


def test_sixteen_bit_files_keep_their_depth_and_ir_is_stretched(tmp_path, pairs):
    _, _, ir = pairs[0]
    ir16 = (ir.astype(np.uint16) * 16 + 1000)  # a 12-bit-like sensor range
    cv2.imwrite(str(tmp_path / "ir16.png"), ir16)
    back = read_image(tmp_path / "ir16.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, ir16)
    grey, notices = io.infrared_to_grey(back)
    assert grey.min() == 0.0 and grey.max() == pytest.approx(1.0)
    assert "16-bit infrared stretched" in notices[0]


def test_false_colour_infrared_is_converted_with_a_notice(pairs):
    _, vis, _ = pairs[0]
    grey, notices = io.infrared_to_grey(vis)
    assert grey.shape == vis.shape[:2] and "unequal colour channels" in notices[0]


def test_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "none.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 500)
    with pytest.raises(ImageError, match="not a readable image.*accepted: PNG, JPEG"):
        read_image(tmp_path / "corrupt.jpg")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "text.png")


def test_truncated_png_is_refused(tmp_path, pairs):
    _, vis, _ = pairs[0]
    ok, buf = cv2.imencode(".png", vis)
    (tmp_path / "cut.png").write_bytes(buf.tobytes()[: len(buf) // 3])
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 5), np.uint8), "5 channels; accepted: 1 \\(grey\\)"),
        (np.zeros((2, 10, 10, 3), np.uint8), "expected \\(H, W\\) or \\(H, W, C\\)"),
        (np.full((8, 8), 2.0, np.float32), "float images must be finite and in \\[0, 1\\]"),
        (np.full((8, 8), np.nan, np.float32), "float images must be finite"),
        (np.zeros((8, 8), np.int32), "unsupported dtype int32"),
    ],
)
def test_bad_arrays_name_the_problem(array, message):
    with pytest.raises(ImageError, match=message):
        io.visible_to_ycrcb(array)


def test_fit_max_side_downscales_with_a_notice():
    img = np.zeros((300, 1000, 3), np.uint8)
    small, note = io.fit_max_side(img, 500)
    assert small.shape == (150, 500, 3) and "downscaled from 1000x300 to 500x150" in note
    same, note = io.fit_max_side(img, 1000)
    assert same is img and note is None


def test_write_png_is_lossless(tmp_path, pairs):
    _, vis, _ = pairs[0]
    io.write_png(tmp_path / "x.png", vis)
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), vis)
