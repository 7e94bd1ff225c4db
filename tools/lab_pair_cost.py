"""The network work of a new pair in the Lab, in forward passes: the clean pass plus the first
intervened pass (the Lab's default settings), with the clean encoder features kept for that
pass (what the Lab does) and dropped before it (what it did before), on held-out 640x480 pairs.

    python tools/lab_pair_cost.py [--pairs 4] [--threads 2]

Prints the median of each as a ratio to one forward pass of the same Fuser, timed alternately
in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ivfusion import Fuser, io
from ivfusion.bench.app import held_out_pairs
from ivfusion.lab import runs
from ivfusion.lab.callbacks import DEFAULTS
from ivfusion.lab.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrs" / "train"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings(complementary=DEFAULTS["complementary"], random=DEFAULTS["random_masking"],
                        dropout=DEFAULTS["dropout"], hole_percent=DEFAULTS["hole_percent"], holes=DEFAULTS["holes"])
    fuser = Fuser(device="cpu", max_side=640)
    times = {"forward": [], "kept": [], "dropped": []}
    for _ in range(2):
        for vis_path, ir_path in held_out_pairs(DATA, args.pairs):
            vis, ir = io.read_image(vis_path), io.read_image(ir_path)
            fuser.reset()
            t = time.perf_counter()
            fuser.fuse(vis, ir)
            times["forward"].append(time.perf_counter() - t)
            for mode in ("dropped", "kept"):
                t = time.perf_counter()
                pair = runs.SharedPair(fuser, vis, ir)
                if mode == "dropped":
                    pair.fuser.release_features()
                runs.run_session_pair(pair, settings)
                times[mode].append(time.perf_counter() - t)
    forward = statistics.median(times["forward"])
    print(f"{torch.get_num_threads()} threads, {args.pairs} held-out pairs x 2; one forward pass {forward:.3f} s")
    print(f"new pair, clean features kept for the intervened pass:   "
          f"{statistics.median(times['kept']) / forward:.2f} forward passes")
    print(f"new pair, clean features dropped before it (the old way): "
          f"{statistics.median(times['dropped']) / forward:.2f} forward passes")


if __name__ == "__main__":
    main()
