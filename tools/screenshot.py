"""The Lab's picture in the README: the first screen a visitor sees, at 1400x1000.

    python tools/screenshot.py [--out docs/images/lab.jpg] [--chromium /usr/bin/chromium]

Starts the app in this process on 127.0.0.1 (bundled weights and examples, the working size
of a real deployment), opens it in Debian's Chromium through Playwright, waits for the
precomputed result and the gate maps, and writes the viewport as a JPEG.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "lab.jpg"))
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1000)
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    from playwright.sync_api import sync_playwright

    import app
    from ivfusion import lab

    demo = app.build_demo(lab.ModelBank(device="cpu"))
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url)
            for sel in ("#fused-clean img", "#fused-intervened img", "#gates img"):
                page.wait_for_function("s => { const i = document.querySelector(s);"
                                       " return i && i.complete && i.naturalWidth > 0; }", arg=sel, timeout=120_000)
            png = page.screenshot()
            browser.close()
    finally:
        demo.close()
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]}, {Path(args.out).stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
