"""The Lab's fixed costs around the network, each measured on the real app (no model timing):

1. the garbage collector: objects alive after start-up, and one full `gc.collect()` before and
   after `gc.freeze()` (the janitor collects while requests run, holding the interpreter);
2. the /fuse API's file defaults: the parameters an API client uploads with every call when
   it does not pass them, and the time one upload of the pair's files takes;
3. encoding one request's five page images one after the other and with `save_images`;
4. with --page: where the fused images start on the first page, at 1400x1000 and 390x844
   (Chromium through Playwright, as in tests/test_browser.py);
5. with --work: the server's work per /fuse in process CPU seconds (all threads), as a ratio to
   one forward pass's, on held-out 640x480 pairs: a new pair, a re-fuse of it with another
   intervention (the shared clean features reused), and the same request again (a result
   cache hit); CPU time, unlike wall time, is little moved by other programs on the machine.

    python tools/lab_overheads.py [--page] [--work] [--chromium /usr/bin/chromium]
"""
from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_s(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--page", action="store_true", help="also measure the first page in Chromium")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--work", action="store_true", help="only the server's work per /fuse in CPU seconds (5.)")
    args = p.parse_args()
    if args.work:
        _work()
        return

    gc.disable()  # the janitor (started by build_demo) freezes; measure the state before that first
    from gradio_client import Client, handle_file

    import app
    from ivfusion.lab import downloads, render

    lab_app = app.LabApp()  # the page's callbacks, the default result computed, no janitor yet
    demo = lab_app.build()
    gc.enable()
    objects = len(gc.get_objects())
    before = _median_s(gc.collect, 3)
    gc.freeze()
    after = _median_s(gc.collect, 3)
    gc.unfreeze()
    print(f"1. gc: {objects:,} objects after start-up; one full gc.collect() {before * 1e3:.0f} ms, "
          f"after gc.freeze() {after * 1e3:.2f} ms")

    port = _free_port()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    try:
        url = f"http://127.0.0.1:{port}/"
        params = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
        with_files = [q["parameter_name"] for q in params["/fuse"]["parameters"] if "path" in str(q["parameter_default"])]
        vis, ir = lab_app.default_pair
        client = Client(url, verbose=False)
        pair = dict(visible=handle_file(vis), infrared=handle_file(ir), api_name="/fuse")
        # what the mask editors' defaults used to be: the pair as background and composite
        editors = {f"draw_{k}": {"background": handle_file(f), "layers": [], "composite": handle_file(f)}
                   for k, f in (("visible", vis), ("infrared", ir))}
        client.predict(**pair)  # the pair's clean pass, so that each timed call is a re-fuse
        plain = _median_s(lambda: client.predict(**pair))
        extra = _median_s(lambda: client.predict(**pair, **editors))
        print(f"2. /fuse parameters with a file default (an API client uploads them with every call): "
              f"{', '.join(with_files)}. A re-fuse through gradio_client takes {plain * 1e3:.0f} ms, and "
              f"{extra * 1e3:.0f} ms when it also sends the two editors' four files (the old defaults)")
    finally:
        demo.close()

    run = lab_app.default_run
    figs = render.render(run, "stretched per level")
    gates, _ = render.gate_figure(figs.levels)
    images = {"fused_clean": (figs.fused_clean, True), "fused_intervened": (figs.fused_intervened, True),
              "difference": (figs.difference, False), "inputs": (figs.inputs, True), "gates": (gates, False)}
    with tempfile.TemporaryDirectory() as folder:
        serial = _median_s(lambda: [downloads.save_image(Path(folder), n, *v) for n, v in images.items()])
        paired = _median_s(lambda: downloads.save_images(Path(folder), images))
    h, w = run.clean.fused_y.shape
    print(f"3. encoding the five page images of a {w}x{h} result: {serial * 1e3:.0f} ms one after the other, "
          f"{paired * 1e3:.0f} ms with save_images")

    if args.page:
        _page(args.chromium)


def _work(pairs: int = 3) -> None:
    import torch

    from ivfusion import Fuser, io
    from ivfusion.bench.app import held_out_pairs
    from ivfusion.lab import callbacks, uploads

    torch.set_num_threads(2)
    data = ROOT.parent / "shared" / "data" / "msrs" / "train"
    uploads.trust_folder(data)
    lab_app = callbacks.LabCallbacks(precompute=False)
    fuser = Fuser(device="cpu", max_side=640)

    def cpu(fn) -> float:
        t = time.process_time()
        fn()
        return time.process_time() - t

    rows = {"forward": [], "new pair": [], "re-fuse": [], "cache hit": [], "render+encode": []}
    for vis, ir in held_out_pairs(data, pairs + 1)[1:]:  # the first pair warms up, below
        v, i = io.read_image(vis), io.read_image(ir)
        fuser.reset()
        rows["forward"].append(cpu(lambda: fuser.fuse(v, i)))
        rows["new pair"].append(cpu(lambda: lab_app._fuse_named(str(vis), str(ir), state={})))
        rows["re-fuse"].append(cpu(lambda: lab_app._fuse_named(str(vis), str(ir), complementary=False,
                                                              dropout="drop infrared", state={})))
        rows["render+encode"].append(lab_app.last_timings["render"] + lab_app.last_timings["encode"])
        rows["cache hit"].append(cpu(lambda: lab_app._fuse_named(str(vis), str(ir), complementary=False,
                                                                dropout="drop infrared", state={})))
    fwd = statistics.median(rows["forward"])
    print(f"5. server work per /fuse, process CPU seconds (all threads), median of {pairs} held-out 640x480 pairs; "
          f"one forward pass {fwd:.2f} s CPU")
    for name in ("new pair", "re-fuse", "cache hit"):
        print(f"   {name:10s} {statistics.median(rows[name]):6.2f} s CPU = {statistics.median(rows[name]) / fwd:.2f}x "
              "one forward")
    print(f"   rendering and encoding a computed result: {statistics.median(rows['render+encode']):.3f} s wall")


def _page(chromium: str) -> None:
    import subprocess

    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for width, height in ((1400, 1000), (390, 844)):
                page = browser.new_page(viewport={"width": width, "height": height})
                for _ in range(120):
                    try:
                        page.goto(f"http://127.0.0.1:{port}/")
                        break
                    except Exception:  # noqa: BLE001 - the server is still starting
                        time.sleep(1)
                page.wait_for_selector("#fuse-btn", timeout=60_000)
                page.wait_for_timeout(2000)
                top = page.evaluate("document.querySelector('#fused-clean').getBoundingClientRect().top")
                gates = page.evaluate("document.querySelector('#gates').getBoundingClientRect().top")
                tall = page.evaluate("document.documentElement.scrollHeight")
                print(f"4. first page at {width}x{height}: the fused images start at y={top:.0f} px, the gate maps "
                      f"at y={gates:.0f} px; the page is {tall} px tall")
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
