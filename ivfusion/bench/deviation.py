"""What the benchmark compares: real pairs as tensors, the deviation of a path from the
reference, a synthetic stand-in model, and the ablation steps of the fast path."""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..data import find_pairs, load_pair
from ..fast import fold_bn
from ..modeling import ISFuse
from ..modeling.blocks import ConvBNAct


def pair_tensors(folder, names: list[str] | None = None, limit: int | None = None) -> list[tuple[str, Tensor, Tensor]]:
    """(stem, vis_y, ir) for the pairs of a dataset folder (ir/ and vi/), sorted by stem, each
    (1, 1, H, W) float32 in [0, 1] at its native size (`ivfusion.data.load_pair`)."""
    out = []
    for stem, ir_path, vi_path in find_pairs(folder):
        if names is not None and stem not in names:
            continue
        vis, ir = load_pair(ir_path, vi_path)
        out.append((stem, torch.from_numpy(vis)[None, None], torch.from_numpy(ir)[None, None]))
        if limit is not None and len(out) >= limit:
            break
    return out


@torch.inference_mode()
def max_deviation(reference: nn.Module, net: nn.Module, pairs) -> dict:
    """Largest absolute difference of `net` from `reference` over `pairs` ((name, vis_y, ir)):
    on the fused image and on the gates, with the pair and size where the fused maximum occurs."""
    worst = {"fused": 0.0, "gates": 0.0, "pair": None, "size": None}
    for name, vis_y, ir in pairs:
        f_ref, g_ref = reference(vis_y, ir)
        f_net, g_net = net(vis_y, ir)
        d = (f_net.float() - f_ref.float()).abs().max().item()
        dg = max((a.float() - b.float()).abs().max().item() for a, b in zip(g_net, g_ref))
        if d >= worst["fused"]:
            worst.update(fused=d, pair=name, size=f"{vis_y.shape[-1]}x{vis_y.shape[-2]}")
        worst["gates"] = max(worst["gates"], dg)
    return worst


def synthetic_model(seed: int = 0, config=None) -> ISFuse:
    """A randomly initialised ISFuse whose BatchNorm statistics and affine parameters are random
    too (running_mean ~ U(-0.5, 0.5), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5),
    bias ~ U(-0.2, 0.2)), so that BatchNorm folding is really exercised: a stand-in for trained
    weights where they are not available."""
    from ..hub import untrained_model

    model = untrained_model(config, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    u = lambda t, lo, hi: t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                u(m.running_mean, -0.5, 0.5), u(m.running_var, 0.5, 2.0), u(m.weight, 0.5, 1.5), u(m.bias, -0.2, 0.2)
    model.weights_source = f"synthetic (random init and BatchNorm statistics, seed {seed})"
    return model.eval()


def fold_bn_model(model: ISFuse) -> ISFuse:
    """A copy of `model` with every BatchNorm folded into its convolution (BN replaced by
    Identity): the reference forward otherwise unchanged. For measuring that step alone."""
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            w, b = fold_bn(m.conv, m.bn)
            with torch.no_grad():
                m.conv.weight.copy_(w)
                m.conv.bias.copy_(b)
            m.bn = nn.Identity()
    return folded


class ChannelsLast(nn.Module):
    """Runs a module on channels-last inputs (the weights converted once)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, vis_y: Tensor, ir: Tensor):
        fused, gates = self.model(vis_y.contiguous(memory_format=torch.channels_last),
                                  ir.contiguous(memory_format=torch.channels_last))
        return fused.contiguous(), tuple(g.contiguous() for g in gates)
