"""Peak RSS that one read_image call adds, for the files issue 11 names (a 7000x7000 16-bit RGBA
PNG of about 380 KB, a 16000x16000 grey "bomb" of about 250 KB, and an accepted 7000x7000 RGB).

    .venv/bin/python tools/decode_rss.py                       # the current ivfusion.io
    git show 4a5e077:ivfusion/io.py > /tmp/old_io.py
    .venv/bin/python tools/decode_rss.py --io /tmp/old_io.py   # an older io.py, for comparison

Each measurement runs in a fresh process (ru_maxrss only grows).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.bad_files import png_of_zeros  # noqa: E402

CHILD = """
import importlib.util, resource, sys
io_path, image = sys.argv[1], sys.argv[2]
if io_path == "-":
    from ivfusion import io
else:
    spec = importlib.util.spec_from_file_location("io_under_test", io_path)
    io = importlib.util.module_from_spec(spec); spec.loader.exec_module(io)
import cv2, numpy, PIL.Image  # noqa: F401 - imported before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    img = io.read_image(image)
    verdict = f"decoded {img.shape} {img.dtype}"
except Exception as e:
    verdict = f"{type(e).__name__}: {str(e)[:110]}"
print(f"{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024:7.0f} MB  {verdict}")
"""

FILES = {
    "rgba16_7000.png": (7000, 7000, 16, 6),
    "grey_16000.png": (16000, 16000, 8, 0),
    "rgb8_7000.png": (7000, 7000, 8, 2),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--io", default="-", help="an io.py to load instead of ivfusion.io")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in FILES.items():
            path = Path(tmp) / name
            path.write_bytes(png_of_zeros(*spec))
            out = subprocess.run([sys.executable, "-c", CHILD, args.io, str(path)], capture_output=True, text=True)
            line = out.stdout.strip() or out.stderr.strip().splitlines()[-1]
            print(f"{name:17s} {path.stat().st_size / 1024:6.0f} KB  +{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
