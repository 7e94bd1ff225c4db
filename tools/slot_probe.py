"""How long a Fuse waits behind a running stability analysis, and where a stability run stops
under its time budget (the Lab's compute slot, issue 11/13). In-process, the real model and the
bundled default example; prints one line per figure.

    nice -n 10 .venv/bin/python tools/slot_probe.py [--side 640] [--k 32] [--budget 30]
"""
from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from ivfusion import lab  # noqa: E402
from ivfusion.lab.callbacks import LabCallbacks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=640)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--budget", type=float, default=30.0)
    a = ap.parse_args()
    cb = LabCallbacks(lab.ModelBank(env={}, device="cpu", max_side=a.side), precompute=False,
                      stability_budget_s=a.budget)
    vis, ir = cb.default_pair
    t0 = time.perf_counter()
    cb.fuse(vis, ir, state={})
    alone = time.perf_counter() - t0
    print(f"fuse alone (new pair, {a.side} px): {alone:.2f} s")
    done = []

    def stab():
        t = time.perf_counter()
        out = cb.stability(vis, ir, k=a.k, progress=lambda *x, **k: None)
        done.append((time.perf_counter() - t, out["summary"].split("\n")[0]))

    th = threading.Thread(target=stab)
    th.start()
    time.sleep(3.0)
    t0 = time.perf_counter()
    out = cb.fuse(vis, ir, state={})
    during = time.perf_counter() - t0
    waited = [n for n in out["notices"].split("\n") if "Waited" in n]
    print(f"fuse during a K={a.k} stability run: {during:.2f} s ({waited[0].strip() if waited else 'no wait'})")
    th.join()
    print(f"stability K={a.k}, budget {a.budget:g} s: {done[0][0]:.1f} s; {done[0][1][:160]}")


if __name__ == "__main__":
    main()
