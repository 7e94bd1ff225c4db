"""Where the fast-bf16 path's deviation from the fp32 reference comes from (docs/PERFORMANCE.md).

    python tools/bf16_deviation.py [--weights SPEC] [--pair msrs_00039N] [--threads 2]

Prints the largest |fused - reference| (in grey levels, x255) of fast-bf16 on the bundled
example pairs, then, on one pair, with only one part of the network in bf16 (encoders, CFIs,
decoder) and the rest in fp32. On a CPU without native bf16 the bf16 convolutions are
emulated: expect about ten seconds per 640x480 pass.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from ivfusion import load_model
from ivfusion.fast import build_fast, max_deviation, real_pairs

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


class Hybrid(torch.nn.Module):
    """The fast network with each part (encoders, CFIs, decoder) taken from the bf16 or the
    fp32 build; activations are cast at the part boundaries."""

    def __init__(self, fp32, bf16, parts: set[str]):
        super().__init__()
        self.fp32, self.bf16, self.parts = fp32, bf16, parts

    def _net(self, part: str):
        return self.bf16 if part in self.parts else self.fp32

    @torch.inference_mode()
    def forward(self, vis, ir):
        enc = self._net("encoders")
        f_vi, f_ir = enc.encode(vis, "vi"), enc.encode(ir, "ir")
        cfi_net = self._net("cfis")
        dt = cfi_net.dtype
        psi, gates = [], []
        for cfi, level in zip(cfi_net.cfis, (2, 1, 0)):
            p, g = cfi(f_vi[level].to(dt), f_ir[level].to(dt), cfi_net.workspace)
            psi.append(p)
            gates.append(g)
        dec = self._net("decoder")
        x = psi[0].to(dec.dtype)
        for block, skip in zip(dec.blocks, psi[1:]):
            x = block(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False).add_(skip.to(dec.dtype)))
        return dec.head(x).float(), tuple(g.float() for g in gates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights spec (default: the bundled weights)")
    ap.add_argument("--pair", default="msrs_00039N", help="bundled example for the per-part breakdown")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.weights).eval()
    fp32, bf16 = build_fast(model, "cpu", "fp32"), build_fast(model, "cpu", "bf16")
    pairs = real_pairs(EXAMPLES)
    d = max_deviation(model, bf16, pairs)
    print(f"fast-bf16 on {len(pairs)} bundled pairs: fused {d['fused'] * 255:.2f}/255 (worst: {d['pair']} {d['size']}), "
          f"gates {d['gates'] * 255:.2f}/255", flush=True)
    one = [p for p in pairs if p[0] == args.pair]
    if not one:
        raise SystemExit(f"no bundled pair named {args.pair!r}; names: {', '.join(p[0] for p in pairs)}")
    for parts in ({"encoders"}, {"cfis"}, {"decoder"}):
        d = max_deviation(model, Hybrid(fp32, bf16, parts), one)
        print(f"{args.pair}, only the {next(iter(parts))} in bf16: fused {d['fused'] * 255:.2f}/255", flush=True)


if __name__ == "__main__":
    main()
