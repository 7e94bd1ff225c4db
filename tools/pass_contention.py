"""What one intervened pass of the Lab costs, alone and beside a busy Python thread.

    python tools/pass_contention.py [--pair VIS IR] [--runs 4] [--threads 2]

A class of 30 keeps the Lab's event loop busy while a forward pass runs in a worker thread.
The pass hands the GIL back and forth once per torch call, so a busy thread in the same
process delays it by up to one GIL switch interval per call. For the Lab's paths ("fast",
and "fast-mixed" where bf16 is native), this prints the mean seconds of one complementary-
masking pass on a held-out 640x480 MSRS pair: alone, and beside a thread that spins in
Python, at Python's default 5 ms switch interval and at the Lab's (app.SWITCH_INTERVAL_S).
Names the CPU; compare figures within one run only.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "msrs" / "train"


def main() -> None:
    from app import SWITCH_INTERVAL_S
    from ivfusion import Fuser, io
    from ivfusion.device import bf16_native, cpu_name

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", nargs=2, default=[str(DATA / "vi" / "00013N.png"), str(DATA / "ir" / "00013N.png")])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vis, ir = io.read_image(args.pair[0]), io.read_image(args.pair[1])
    print(f"{cpu_name()}, {args.threads} threads, bf16 native: {bf16_native()}; pair {Path(args.pair[0]).name} "
          f"{vis.shape[1]}x{vis.shape[0]}; mean of {args.runs} complementary-masking passes")
    default_switch = sys.getswitchinterval()
    for path in ["fast"] + (["fast-mixed"] if bf16_native() else []):
        fuser = Fuser(device="cpu", max_side=640, path=path)
        fuser.set_pair(vis, ir)
        fuser.intervene("complementary", 1)  # warm-up
        seed = iter(range(100, 100000))

        def timed() -> float:
            t = time.perf_counter()
            for _ in range(args.runs):
                fuser.intervene("complementary", next(seed))
            return (time.perf_counter() - t) / args.runs

        row = [f"alone {timed():.3f} s"]
        for switch in (default_switch, SWITCH_INTERVAL_S):
            stop = threading.Event()

            def spin():
                while not stop.is_set():
                    pass

            sys.setswitchinterval(switch)
            th = threading.Thread(target=spin)
            th.start()
            try:
                row.append(f"beside a busy thread, switch {switch * 1000:g} ms: {timed():.3f} s")
            finally:
                stop.set()
                th.join()
                sys.setswitchinterval(default_switch)
        print(f"  {path:10s} " + "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
