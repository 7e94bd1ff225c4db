"""How many requests one upload sets off in the Lab (issue 16): upload a visible, then an
infrared image, in Chromium, and count the POSTs in the next 11 s, by handler.

    python tools/lab_requests.py [--chromium /usr/bin/chromium]

Three pairs of the shared data, the last with an infrared image of another size. The browser
test (tests/test_browser.py) holds the bar (20 a pair); this prints the counts.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args(argv)
    import cv2
    from playwright.sync_api import sync_playwright

    from ivfusion import lab
    from tests.helpers import SHARED
    from tests.test_app import launch

    data = SHARED / "data"
    small = Path(tempfile.mkdtemp()) / "small_ir.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(data / "msrs/train/ir/00003N.png")), (320, 240)))
    pairs = [(data / "msrs/train/vi/00003N.png", data / "msrs/train/ir/00003N.png"),
             (data / "roadscene/test/vi/FLIR_00211.jpg", data / "roadscene/test/ir/FLIR_00211.jpg"),
             (data / "msrs/train/vi/00003N.png", small)]
    demo, url = launch(lab.ModelBank(device="cpu", max_side=320))
    names = {d.get("id", i): (d.get("api_name") or "?") for i, d in enumerate(demo.config["dependencies"])}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            posts: list[str] = []

            def seen(r):
                if r.method != "POST":
                    return
                try:
                    fn = json.loads(r.post_data or "{}").get("fn_index")
                except ValueError:
                    fn = None
                posts.append(names.get(fn, "upload" if "/upload" in r.url else "?"))

            page.on("request", seen)
            page.goto(url)
            page.wait_for_selector("#fuse-btn", timeout=60_000)
            time.sleep(2)
            for vis, ir in pairs:
                posts.clear()
                page.locator("#visible-input input[type=file]").set_input_files(str(vis))
                page.wait_for_timeout(1000)
                page.locator("#infrared-input input[type=file]").set_input_files(str(ir))
                page.wait_for_timeout(11_000)
                counts = ", ".join(f"{n} {c}" for n, c in collections.Counter(posts).most_common())
                print(f"{vis.name} + {ir.name}: {len(posts)} POST requests in 11 s ({counts})")
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
