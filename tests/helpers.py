"""Helpers used only by the tests (the package keeps what the benchmark needs: ivfusion.bench)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch


# The shared folder (paper notes, data, the authors' checkpoint): $IVFUSION_SHARED, else
# <repo>/../shared. The one place the tests read it from.
SHARED = Path(os.environ.get("IVFUSION_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


@contextlib.contextmanager
def encoder_calls(net):
    """Record the input shape (H, W) of every call of net.encoder_vi and net.encoder_ir:
    yields {"vi": [...], "ir": [...]}."""
    seen = {"vi": [], "ir": []}
    hooks = [getattr(net, f"encoder_{m}").register_forward_hook(
        lambda mod, args, out, m=m: seen[m].append(tuple(args[0].shape[-2:]))) for m in ("vi", "ir")]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def plain_forward(model, visible_y: np.ndarray, infrared: np.ndarray):
    """The reference module's full forward on (H, W) float32 inputs: (fused (H, W), gates
    [(h, w)] coarsest first), numpy float32."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
    with torch.inference_mode():
        fused, gates = model(t(visible_y), t(infrared))
    return fused[0, 0].numpy(), [g[0, 0].numpy() for g in gates]
