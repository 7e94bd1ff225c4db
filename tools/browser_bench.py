"""The in-browser Fuse's cost beside the server's (docs/PERFORMANCE.md, "In the browser").

    python tools/browser_bench.py [--runs 5] [--sizes 320 640]

Starts the Lab (`python app.py`, its in-browser model exported into a temporary cache) and
headless Chromium (WebAssembly backend, one thread: the page is not cross-origin isolated),
and prints for each size (the longer side of a 4:3 image):
  - browser forward: the ONNX graph's forward pass in the page (`ivfusionLab.bench`), median;
  - server forward: the same forward on the server's path (`Fuser.run`, the fast path), median;
  - server work per click: in server mode the intervened forward pass (the clean pass is
    cached per pair), in browser mode the keep masks' sampling and PNG encoding
    (`BrowserModel.masks` minus reading headers), median;
and the live mode's frame rate on the pair the page opens with.
Needs the `export` extra, onnxruntime-web (`npm ci --prefix ivfusion/lab/web`) and Chromium.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    args = ap.parse_args()

    import shutil

    import torch
    from playwright.sync_api import sync_playwright

    from ivfusion.export import export_onnx
    from ivfusion.lab import browser, models
    from ivfusion.lab.browser import _png_url
    from ivfusion.lab.settings import Settings, intervention_masks
    from tests.appserver import AppServer

    fuser, _ = models.ModelBank(env={}).get(models.DEFAULT_CHOICE)
    cache = Path(tempfile.mkdtemp(prefix="ivfusion-bench-"))
    (cache / "onnx").mkdir()
    export_onnx(fuser.model, cache / "onnx" / f"isfuse-{browser.weights_digest(fuser.model)[:20]}.onnx")
    rows = []
    with AppServer(env={"IVFUSION_CACHE": str(cache)}) as srv, sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.url)
        page.wait_for_function("window.ivfusionLab && ['ready', 'failed'].includes(window.ivfusionLab.state)",
                               timeout=600_000)
        backend = page.evaluate("window.ivfusionLab.backend")
        for side in args.sizes:
            h, w = side * 3 // 4, side
            web = page.evaluate(f"window.ivfusionLab.bench({h}, {w}, {args.runs})")
            x = torch.rand(1, 1, h, w)
            server = _median_ms(lambda: fuser.run(x, x), args.runs)
            s = Settings(complementary=True)
            masks = _median_ms(lambda: [_png_url(m) for m in intervention_masks(s, h, w)], args.runs)
            rows.append((f"{w}x{h}", web, server, masks))
            print(f"measured {w}x{h}: browser {web:.0f} ms, server {server:.0f} ms", flush=True)
        # live mode on the pair the page opens with: the pointer sweeps the intervened image,
        # each move waiting for the frame before it (so the rate is the browser's, not the mouse's)
        page.click("#fuse-web-btn")
        page.wait_for_function("(window.ivfusionLab.count || 0) > 0", timeout=600_000)
        live_size = page.evaluate("`${window.ivfusionLab.pair.w}x${window.ivfusionLab.pair.h}`")
        page.check("#ivf-live")
        view = page.locator("#ivf-fused-int")
        for k in range(args.runs * 2):
            view.scroll_into_view_if_needed()
            box = view.bounding_box()  # where it is now: the page's text above it may have grown
            before = page.evaluate("window.ivfusionLab.live.count || 0")
            page.mouse.move(box["x"] + box["width"] * (0.1 + 0.8 * k / (args.runs * 2)), box["y"] + box["height"] / 2)
            page.wait_for_function("n => (window.ivfusionLab.live.count || 0) > n", arg=before, timeout=600_000)
        fps = page.evaluate("window.ivfusionLab.live.fps")
        b.close()
    shutil.rmtree(cache, ignore_errors=True)
    print(f"Chromium {backend} (1 thread) vs the server's path ({fuser.path}, {torch.get_num_threads()} threads), "
          f"median of {args.runs}")
    print(f"{'size':>8} {'browser forward':>16} {'server forward':>15} {'server per click: server mode':>30} "
          f"{'browser mode':>13}")
    for size, web, server, masks in rows:
        print(f"{size:>8} {web:>13.0f} ms {server:>12.0f} ms {server:>27.0f} ms {masks:>10.1f} ms")
    print(f"live mode at {live_size}: {fps:.2f} frames/s (the rate the page shows: masks, forward and drawing, over its last five frames)")


if __name__ == "__main__":
    main()
