"""Reading images, colour handling and every bad-input case of the io layer."""
import os

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


# --- the guarded decoder: header first, then the pixel and byte budgets, then decoding -------

def _encoded(array, ext):
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "shape, dtype, ext, channels, depth, fmt",
    [
        ((20, 30), np.uint8, ".png", 1, 8, "PNG"),
        ((20, 30), np.uint16, ".png", 1, 16, "PNG"),
        ((20, 30, 3), np.uint16, ".png", 3, 16, "PNG"),  # Pillow opens it as 8-bit RGB
        ((20, 30, 4), np.uint16, ".png", 4, 16, "PNG"),
        ((20, 30, 3), np.uint8, ".jpg", 3, 8, "JPEG"),
        ((20, 30), np.uint8, ".bmp", 1, 8, "BMP"),
        ((20, 30, 4), np.uint8, ".bmp", 4, 8, "BMP"),
        ((20, 30, 3), np.uint16, ".tif", 3, 16, "TIFF"),
        ((20, 30, 4), np.uint8, ".webp", 4, 8, "WEBP"),
    ],
)
def test_header_matches_what_read_image_decodes(shape, dtype, ext, channels, depth, fmt):
    rng = np.random.default_rng(0)
    data = _encoded(rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype), ext)
    header = io.read_header(data)
    assert header == io.ImageHeader(30, 20, channels, depth, fmt)
    img = read_image(data)
    assert img.shape[:2] == (20, 30) and (img.shape[2] if img.ndim == 3 else 1) == channels
    assert img.nbytes == header.decoded_bytes


def test_palette_and_grey_alpha_pngs_count_the_channels_opencv_makes(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pt.png", transparency=0)
    Image.fromarray(rgb[..., :2].copy(), "LA").save(tmp_path / "la.png")
    for name, channels in (("p.png", 3), ("pt.png", 4), ("la.png", 4)):
        assert io.read_header(tmp_path / name).channels == channels == read_image(tmp_path / name).shape[2]


def test_bytes_and_path_decode_alike(tmp_path, pairs):
    _, vis, _ = pairs[0]
    io.write_png(tmp_path / "v.png", vis)
    np.testing.assert_array_equal(read_image((tmp_path / "v.png").read_bytes()), read_image(tmp_path / "v.png"))


def test_budgets_name_the_file_its_size_and_the_limit(tmp_path):
    from .bad_files import png_of_zeros

    (tmp_path / "big.png").write_bytes(png_of_zeros(300, 200, 16, 6))  # 60,000 px, 480,000 bytes decoded
    with pytest.raises(ImageError, match=r"big\.png: 300x200 is 0\.1 megapixels, over the limit of 0\.1 megapixels"):
        read_image(tmp_path / "big.png", max_pixels=50_000)
    with pytest.raises(ImageError, match=r"big\.png: 300x200 PNG, 4 channel\(s\), 16-bit would take 0.5 MiB decoded, over the limit of 0.4 MiB"):
        read_image(tmp_path / "big.png", max_bytes=400_000)
    assert read_image(tmp_path / "big.png", max_pixels=60_000, max_bytes=480_000).shape == (200, 300, 4)
    assert read_image(tmp_path / "big.png", max_pixels=None, max_bytes=None).dtype == np.uint16


def test_huge_headers_are_refused_from_the_header(tmp_path):
    from .bad_files import png_header_only

    (tmp_path / "huge.png").write_bytes(png_header_only(50_000, 50_000))  # 2.5 GP in 100 bytes
    with pytest.raises(ImageError, match=r"huge\.png: 50000x50000 is 2,500\.0 megapixels, over the limit of 50\.0"):
        read_image(tmp_path / "huge.png")
    assert io.read_header(tmp_path / "huge.png") == io.ImageHeader(50_000, 50_000, 1, 8, "PNG")


PEAK_RSS = """
import resource, sys
from ivfusion import io
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    io.read_image(sys.argv[1])
    print("decoded")
except io.ImageError as e:
    print("refused:", e)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("width, height, depth, colour, message", [
    (7000, 7000, 16, 6, "7000x7000 PNG, 4 channel\\(s\\), 16-bit would take 373.8 MiB decoded, over the limit of 256.0 MiB"),
    (16000, 16000, 8, 0, "16000x16000 is 256.0 megapixels, over the limit of 50.0 megapixels"),
])
def test_bombs_are_refused_without_decoding(tmp_path, width, height, depth, colour, message):
    """A 380 KB 7000x7000 16-bit RGBA PNG used to add about 750 MB to the peak RSS per decode;
    a 250 KB 16000x16000 grey one 490 MB. Refused from the header, they add next to nothing."""
    import re
    import subprocess
    import sys

    from .bad_files import png_of_zeros

    path = tmp_path / "bomb.png"
    path.write_bytes(png_of_zeros(width, height, depth, colour))
    assert path.stat().st_size < 400_000
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    verdict, grown_mb = out.stdout.strip().splitlines()
    assert verdict.startswith("refused:") and re.search(message, verdict), verdict
    assert int(grown_mb) < 32, f"peak RSS grew by {grown_mb} MB while refusing"


def test_unaccepted_formats_and_depths_are_named(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.gif")
    with pytest.raises(ImageError, match=r"x\.gif: a GIF image, not accepted; accepted: PNG, JPEG"):
        read_image(tmp_path / "x.gif")
    cv2.imwrite(str(tmp_path / "f.tif"), np.zeros((8, 8), np.float32))
    with pytest.raises(ImageError, match=r"f\.tif: 8x8 TIFF, 1 channel\(s\), 32-bit samples; accepted: .*8- or 16-bit"):
        read_image(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="it is a folder"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="image \\(in memory\\): the data is empty"):
        read_image(b"")


def test_one_pixel_image_reads(tmp_path):
    cv2.imwrite(str(tmp_path / "one.png"), np.full((1, 1, 3), 7, np.uint8))
    assert read_image(tmp_path / "one.png").shape == (1, 1, 3)
    assert io.read_header(tmp_path / "one.png") == io.ImageHeader(1, 1, 3, 8, "PNG")


def test_check_array_is_public_with_the_budget():
    with pytest.raises(ImageError, match=r"visible image: 20x10 is 0\.0 megapixels, over the limit"):
        io.check_array(np.zeros((10, 20), np.uint8), "visible image", max_pixels=100)


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    io.atomic_write(target, b"old")
    assert target.read_bytes() == b"old"

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.write_png(target, np.zeros((4, 4), np.uint8))
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.png"]
    with pytest.raises(OSError, match="No space left"):
        io.write_png(tmp_path / "new.png", np.zeros((4, 4), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no partial new.png, no temp file
    monkeypatch.undo()
    io.write_png(target, np.full((4, 4), 9, np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert read_image(target).max() == 9 and target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes


def test_a_header_that_would_read_megabytes_of_tags_is_refused_unread(tmp_path):
    import resource

    from tests.bad_files import tiff_strip_bomb

    small = tmp_path / "small.tif"
    small.write_bytes(tiff_strip_bomb(300))  # the same layout, small: a real image
    assert io.read_header(small).height == 300 and io.read_image(small).shape == (300, 1)
    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(tiff_strip_bomb(2_000_000))  # 16 MB of tags
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(io.ImageError, match=r"header .* is larger than 4 MiB; refused unread"):
        io.read_header(bomb)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 50, grown_mib


@pytest.mark.parametrize("kind", ["lossy", "lossless", "lossless-alpha", "lossy-alpha"])
def test_webp_headers_are_read_from_the_first_chunk(tmp_path, kind):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((30, 40, 4)) * 255).astype(np.uint8)
    img = Image.fromarray(rgb if "alpha" in kind else rgb[..., :3])
    path = tmp_path / "x.webp"
    img.save(path, lossless="lossless" in kind, quality=80)
    head = io.read_header(path)
    assert (head.width, head.height, head.format) == (40, 30, "WEBP")
    assert head.channels == io.read_image(path).shape[2] == (4 if "alpha" in kind else 3)
