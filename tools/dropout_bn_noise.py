"""Why exactness is loose in the authors' recipe: a dropped modality is an all-zero input, and
in a train-mode forward its encoder's BatchNorms normalise a constant map, so that pass's
output is rounding noise amplified by 1/sqrt(eps). This prints how far the same weights'
outputs move between fp64 and fp32, between 1 and 2 threads, and between memory layouts, for
a real input and for the all-zero one (docs/TRAINING.md, "Speed and precision on a CPU").

    python tools/dropout_bn_noise.py
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from ivfusion.modeling import ISFuse

    torch.manual_seed(0)
    base = ISFuse().train()
    vis, ir = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    for name, v in (("visible kept", vis), ("visible dropped (all zero)", torch.zeros_like(vis))):
        def out(model, threads=1, dtype=torch.float32):
            torch.set_num_threads(threads)
            m = copy.deepcopy(model).to(dtype)
            return m(v.to(dtype), ir.to(dtype))[0].double()

        ref = out(base)
        fp64 = (out(base, dtype=torch.float64) - ref).abs().max().item()
        threads = (out(base, threads=2) - ref).abs().max().item()
        layout = (out(copy.deepcopy(base).to(memory_format=torch.channels_last)) - ref).abs().max().item()
        print(f"{name:<28} largest output change: fp64 {fp64:.2e}, 2 threads {threads:.2e}, channels-last {layout:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
