"""Peak memory of one `Fuser.set_pair` and one `Fuser.intervene`, per size and inference path.

    .venv/bin/python tools/forward_memory.py                      # the default table
    .venv/bin/python tools/forward_memory.py --sizes 1024x1024 --paths fast --interventions drop-infrared

Each case runs in a fresh subprocess (so that earlier cases' freed heap and oneDNN caches do
not hide or inflate its peak) and reads the kernel's own counters from /proc/self/status, no
tracemalloc: `base` is VmRSS after the model is built and the pair decoded; VmHWM (reset with
clear_refs 5 before each step) gives each step's peak; `kept` is VmRSS after the steps, after
garbage collection and malloc_trim, with the Fuser (and its cached pair) still alive, and
`state` what `ivfusion.lab.session.nbytes` counts for that Fuser. All figures in MiB over `base`.
keep_features "no" is the Lab's setting (`Fuser(keep_features=False)`: no encoder features
kept between calls).
A real RoadScene pair, resized to each size, is the input. Linux only.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IVFUSION_SHARED") or ROOT.parent / "shared")


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _trim() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def one_case(size: str, path: str, intervention: str, keep: str, threads: int) -> dict:
    """Runs in the child: returns the case's figures."""
    import cv2
    import numpy as np
    import torch

    from ivfusion import Fuser
    from ivfusion.lab.session import nbytes

    torch.set_num_threads(threads)
    w, h = (int(v) for v in size.split("x"))
    root = SHARED / "data" / "roadscene" / "test"
    name = sorted(p.name for p in (root / "ir").iterdir())[0]
    vis = cv2.cvtColor(cv2.imread(str(root / "vi" / name)), cv2.COLOR_BGR2RGB)
    ir = cv2.imread(str(root / "ir" / name), cv2.IMREAD_GRAYSCALE)
    vis, ir = cv2.resize(vis, (w, h), interpolation=cv2.INTER_LINEAR), cv2.resize(ir, (w, h))
    fuser = Fuser(path=path, max_side=None, keep_features=keep == "yes")
    _trim()
    base = _status("VmRSS")
    _reset_peak()
    fuser.set_pair(vis, ir)
    peak_set = _status("VmHWM") - base
    _reset_peak()
    fuser.intervene(intervention, seed=1)
    peak_int = _status("VmHWM") - base
    _trim()
    kept = _status("VmRSS") - base
    return {"size": size, "path": fuser.path, "intervention": intervention, "keep": keep, "base": base, "set_pair": peak_set,
            "intervene": peak_int, "kept": kept, "state": nbytes(fuser) / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="640x480,1024x1024", help="WxH list (default 640x480,1024x1024)")
    ap.add_argument("--paths", default="reference,fast", help="inference paths (default reference,fast)")
    ap.add_argument("--interventions", default="complementary,drop-infrared",
                    help="one intervene() per case with each of these (default complementary,drop-infrared)")
    ap.add_argument("--keep", default="yes,no", help="Fuser(keep_features=...) values: yes, no (default both)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(one_case(*args.case.split(","), args.threads)))
        return 0
    print("| size | path | intervention | keep_features | base RSS | set_pair peak | intervene peak | kept after | Fuser state |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        for path in args.paths.split(","):
            for iv, keep in ((i, k) for i in args.interventions.split(",") for k in args.keep.split(",")):
                p = subprocess.run([sys.executable, __file__, "--case", f"{size},{path},{iv},{keep}",
                                    "--threads", str(args.threads)], capture_output=True, text=True, cwd=ROOT)
                if p.returncode:
                    print(f"| {size} | {path} | {iv} | {keep} | failed: {p.stderr.strip().splitlines()[-1:]} |||||")
                    continue
                r = json.loads(p.stdout.strip().splitlines()[-1])
                print(f"| {size} | {r['path']} | {iv} | {keep} | {r['base']:.0f} | +{r['set_pair']:.0f} | +{r['intervene']:.0f} "
                      f"| +{r['kept']:.0f} | {r['state']:.0f} |", flush=True)
    print("(MiB; peaks and kept over the base RSS, measured from VmHWM/VmRSS in a fresh process per row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
