"""Where the fast-bf16 path's deviation from the fp32 reference comes from (docs/PERFORMANCE.md).

    python tools/bf16_deviation.py [--weights SPEC] [--pair msrs_00039N] [--threads 2]

Prints the largest |fused - reference| (in grey levels, x255) of fast-bf16 and of fast-mixed
(fp32 encoders) on the bundled example pairs, then, on one pair, with only one part of the
network in bf16 (encoders, CFIs, decoder) and the rest in fp32. On a CPU without native bf16 the bf16 convolutions are
emulated: expect about ten seconds per 640x480 pass.
"""
from __future__ import annotations

import argparse
import copy

import torch

from ivfusion import load_model
from ivfusion.bench.deviation import max_deviation, pair_tensors
from ivfusion.fast import build_fast
from ivfusion.hub import EXAMPLES_DIR

PARTS = {"encoders": ("encoder_vi", "encoder_ir"), "cfis": ("cfis.0", "cfis.1", "cfis.2"), "decoder": ("decoder",)}


def _cast(x, dtype):
    if torch.is_tensor(x):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(v, dtype) for v in x)
    return x


class Cast(torch.nn.Module):
    """A module of the bf16 build inside the fp32 build: inputs cast to bf16, outputs to fp32."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return _cast(self.module(*_cast(args, torch.bfloat16)), torch.float32)

    def forward_with_cross(self, *args):  # what ISFuse.fuse_features calls on a CFI
        return _cast(self.module.forward_with_cross(*_cast(args, torch.bfloat16)), torch.float32)


def hybrid(fp32, bf16, part: str):
    """The fp32 fast network with one part (encoders, CFIs or decoder) from the bf16 build."""
    net = copy.deepcopy(fp32)
    for name in PARTS[part]:
        parent, _, child = ("model." + name).rpartition(".")
        setattr(net.get_submodule(parent), child, Cast(bf16.get_submodule("model." + name)))
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights spec (default: the bundled weights)")
    ap.add_argument("--pair", default="msrs_00039N", help="bundled example for the per-part breakdown")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.weights).eval()
    fp32, bf16 = build_fast(model, "cpu", "fp32"), build_fast(model, "cpu", "bf16")
    pairs = pair_tensors(EXAMPLES_DIR)
    mixed = build_fast(model, "cpu", "bf16", fp32_encoders=True)
    for name, net in (("fast-bf16", bf16), ("fast-mixed", mixed)):
        d = max_deviation(model, net, pairs)
        print(f"{name} on {len(pairs)} bundled pairs: fused {d['fused'] * 255:.2f}/255 (worst: {d['pair']} {d['size']}), "
              f"gates {d['gates'] * 255:.2f}/255", flush=True)
    one = [p for p in pairs if p[0] == args.pair]
    if not one:
        raise SystemExit(f"no bundled pair named {args.pair!r}; names: {', '.join(p[0] for p in pairs)}")
    for part in PARTS:
        d = max_deviation(model, hybrid(fp32, bf16, part), one)
        print(f"{args.pair}, only the {part} in bf16: fused {d['fused'] * 255:.2f}/255", flush=True)


if __name__ == "__main__":
    main()
