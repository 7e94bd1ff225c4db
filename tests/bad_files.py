"""Crafted image files for the guarded-decoder tests: real, valid PNGs far larger decoded than
on disk (written row by row, so making them never holds the decoded image), and headers that
promise more than the file holds."""
from __future__ import annotations

import struct
import zlib

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A valid, fully decodable black PNG (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA)."""
    row = b"\0" * (1 + width * _CHANNELS[colour_type] * bit_depth // 8)  # filter byte + samples
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG whose header promises width x height but whose pixel data is a few bytes."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def tiff_strip_bomb(strips: int) -> bytes:
    """A valid 1-pixel-wide grey TIFF of `strips` rows, one strip a row: its StripOffsets and
    StripByteCounts tags hold `strips` entries each (6.4 million make a 51 MB file whose tags
    cost a naive header reader 374 MiB)."""
    ntags = 8
    offsets_at = 8 + 2 + ntags * 12 + 4
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips
    tags = [(256, 4, 1, 1), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, strips, offsets_at), (278, 4, 1, 1), (279, 4, strips, counts_at)]
    ifd = struct.pack("<H", ntags) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, count, value, 0)
        for tag, kind, count, value in tags) + struct.pack("<I", 0)
    offsets = b"".join(struct.pack("<I", pixels_at + k) for k in range(strips)) if strips < 1000 else \
        struct.pack("<I", pixels_at) * strips  # a large bomb may point every strip at one byte
    return b"II*\0" + struct.pack("<I", 8) + ifd + offsets + struct.pack("<I", 1) * strips + b"\0" * strips


def pth_bomb(path, declared_bytes: int) -> None:
    """A deflated torch .pth whose tensor entry declares `declared_bytes` of zeros (it
    compresses about 1000:1), written in 16 MiB chunks."""
    import io
    import zipfile

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            if info.filename.endswith("data/0"):
                with z.open(info.filename, "w", force_zip64=True) as f:
                    for _ in range(-(-declared_bytes // 2**24)):
                        f.write(bytes(2**24))
            else:
                z.writestr(info.filename, src.read(info.filename))
