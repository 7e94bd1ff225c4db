"""Multiply-accumulate counts of one forward pass."""
from __future__ import annotations


def count_macs(net, vis_y, ir) -> int:
    """Multiply-accumulates of one forward from torch's FLOP counter (MACs = FLOPs / 2; it
    counts convolutions and matrix products, not element-wise operations)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..fast import FastConv

    # oneDNN's fused convolution has no FLOP formula: count the same convolution unfused
    fused = [m for m in net.modules() if isinstance(m, FastConv) and m.fused]
    for m in fused:
        m.fused = False
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(vis_y, ir)
    finally:
        for m in fused:
            m.fused = True
    return counter.get_total_flops() // 2
