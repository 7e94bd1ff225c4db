"""How long the eleven fusion metrics take on one 640x480 pair."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .paths import shared_dir as default_shared_dir


def time_metrics(repeats: int = 5, shared_dir: str | Path | None = None) -> dict[str, float]:
    """Time the metrics on one 640 x 480 MSRS triple (IR, VI, max fusion) and print it.

    Reads ``msrs/train/{ir,vi}/00001D.png`` from the shared data folder (``shared_dir``, else
    ``$IVFUSION_SHARED``, else ``../shared`` beside the checkout). Prints the best-of-``repeats``
    wall time of each metric and of ``evaluate_pair``, plus the process CPU time of
    ``evaluate_pair`` (all threads) and the load average: on a busy machine wall time
    measures the machine, CPU time the code. Returns the wall times in seconds, with
    ``"evaluate_pair_cpu"`` added.
    """
    import cv2
    import numpy as np

    from .. import metrics as M

    data = Path(shared_dir or default_shared_dir()) / "data" / "msrs" / "train"
    a = M.read_grey(data / "ir" / "00001D.png")
    b = M.read_grey(data / "vi" / "00001D.png")
    f = np.maximum(a, b)

    def best(fn, clock=time.perf_counter) -> float:
        ts = []
        for _ in range(repeats):
            t0 = clock()
            fn()
            ts.append(clock() - t0)
        return min(ts)

    single = {"EN", "SD", "SF", "AG"}
    out: dict[str, float] = {}
    for name in M.METRIC_NAMES:
        fn = getattr(M, name)
        out[name] = best((lambda fn=fn: fn(f)) if name in single else (lambda fn=fn: fn(a, b, f)))
    out["evaluate_pair"] = best(lambda: M.evaluate_pair(a, b, f))
    out["evaluate_pair_cpu"] = best(lambda: M.evaluate_pair(a, b, f), clock=time.process_time)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"metrics timing on {a.shape[1]}x{a.shape[0]} (best of {repeats}; {os.cpu_count()} CPUs, "
          f"load average {load:.2f}, OpenCV threads {cv2.getNumThreads()}):")
    for k, v in out.items():
        label = "evaluate_pair CPU" if k == "evaluate_pair_cpu" else k
        print(f"  {label:18s} {v * 1000:8.1f} ms")
    return out
