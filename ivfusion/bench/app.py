"""`ivfusion bench --app`: latency and memory of the Intervention Lab's main request."""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from ivfusion import io
from ivfusion.lab.examples import EXAMPLES_DIR
from ivfusion.lab.models import APP_MAX_SIDE, make_fuser
from ivfusion.lab.render import render
from ivfusion.lab.runs import run_pair
from ivfusion.lab.settings import Settings


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def benchmark_app(weights: str | None = None, height: int = 480, width: int = 640, requests: int = 100,
                  threads: int = 2, warmup: int = 3, example: str = "msrs_00037N", fast: bool = True,
                  verbose: bool = False) -> dict:
    """Latency and memory of the lab's main request: clean + intervened fuse with gates and all
    heat maps (`run_pair` + `render`), as the app runs it, on a real example pair resized to
    height x width, with `threads` torch threads.

    weights: a weights spec (None: the bundled default, as the app). The interventions rotate
    through complementary, random, drop IR and complementary + drop visible, with a new seed
    each request. Every timed request is cold (both passes run); `cpu_median_s` is the
    process CPU time per request (a load-independent check: with 2 threads, wall time on an
    idle machine is between cpu/2 and cpu). `warm_median_s` times re-fusing the same pair with
    new interventions in one session, where the clean pass is reused (what a user tweaking
    settings sees). Memory: resident set size after `warmup` requests and after all `requests`
    (growth = end - start) and between the middle and the end (a leak grows in both halves).
    Returns a dict; `python -m ivfusion.lab` prints it.
    """
    torch.set_num_threads(int(threads))
    t_load = time.perf_counter()
    fuser = make_fuser(weights, device="cpu", max_side=max(height, width, APP_MAX_SIDE), fast=fast)
    t_load = time.perf_counter() - t_load
    vis_path, ir_path = EXAMPLES_DIR / "vi" / f"{example}.png", EXAMPLES_DIR / "ir" / f"{example}.png"
    vis, ir = io.read_image(vis_path), io.read_image(ir_path)
    if vis.shape[:2] != (height, width):
        vis, ir = io.resize_to(vis, height, width), io.resize_to(ir, height, width)
    rotation = [Settings(complementary=True), Settings(random=True), Settings(dropout="drop IR"),
                Settings(complementary=True, dropout="drop visible")]

    def one(i: int, cache: dict | None = None) -> tuple[float, float]:
        s = rotation[i % len(rotation)]
        s = Settings(s.complementary, s.random, s.dropout, 16, 1 + i % 6, i)
        t, c = time.perf_counter(), time.process_time()
        render(run_pair(fuser, vis, ir, s, cache=cache))
        return time.perf_counter() - t, time.process_time() - c

    for i in range(warmup):
        one(i)
    rss_start = rss_mb()
    lat, cpu, rss_mid = [], [], rss_start
    for i in range(requests):
        t, c = one(warmup + i)
        lat.append(t)
        cpu.append(c)
        if i == requests // 2:
            rss_mid = rss_mb()
        if verbose:
            print(f"  request {i + 1}/{requests}: {t:.3f} s (CPU {c:.2f} s), RSS {rss_mb():.0f} MiB", flush=True)
    rss_end = rss_mb()
    session: dict = {}
    one(0, session)  # fills the session's clean-pass cache
    warm = [one(i, session)[0] for i in range(1, 1 + max(1, min(20, requests // 5)))]
    lat_sorted = sorted(lat)
    p90 = lat_sorted[min(len(lat) - 1, math.ceil(0.9 * len(lat)) - 1)]
    return {
        "what": "clean + intervened fuse with gates and heat maps (ivfusion.lab.run_pair + render)",
        "size": f"{width}x{height}", "threads": int(threads), "requests": int(requests),
        "weights": fuser.weights_source, "path": fuser.path, "device": str(fuser.device),
        "load_s": round(t_load, 3),
        "median_s": round(float(np.median(lat)), 4), "p90_s": round(p90, 4),
        "min_s": round(lat_sorted[0], 4), "max_s": round(lat_sorted[-1], 4),
        "budget_s": 2.0, "median_within_budget": bool(np.median(lat) < 2.0),
        "cpu_median_s": round(float(np.median(cpu)), 4),
        "warm_median_s": round(float(np.median(warm)), 4), "warm_requests": len(warm),
        "rss_start_mib": round(rss_start, 1), "rss_mid_mib": round(rss_mid, 1), "rss_end_mib": round(rss_end, 1),
        "rss_growth_mib": round(rss_end - rss_start, 1), "rss_growth_second_half_mib": round(rss_end - rss_mid, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivfusion.lab",
                                     description="Benchmark the Intervention Lab's main request (latency, memory).")
    parser.add_argument("--weights", default=None, help="weights spec (default: the bundled weights; 'untrained' works offline)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--reference", action="store_true", help="use the reference forward pass, not the fast path")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    res = benchmark_app(args.weights, args.height, args.width, args.requests, args.threads,
                        fast=not args.reference, verbose=args.verbose)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
