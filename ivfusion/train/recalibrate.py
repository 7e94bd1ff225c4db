"""Re-estimating BatchNorm running statistics on clean passes only.

Why: inference normalises with BN running statistics, which training accumulates over every
forward it makes. With the five variants in one pooled forward they hold the variance *between*
variants (all-zero modalities, masked inputs), far larger than any clean image's own; with five
separate forwards they average five different means. Either way a clean image at inference is
normalised unlike the clean pass in training, which is what flattens (pooled) or shifts
(separate) the invariance gates at inference. Averaging the statistics of clean training crops,
batch by batch (BN with momentum None, as "precise BN" does), gives inference the statistics
the clean pass was trained with. Nothing else in the network changes.
"""
from __future__ import annotations

import torch
from torch import nn

from .dataset import PairDataset


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset: PairDataset, batches: int = 50, batch_size: int = 16,
                   seed: int = 0) -> nn.Module:
    """Replace every BatchNorm's running mean/var by the average over `batches` clean batches
    of `dataset` crops (keys (seed-derived step, index), so a seed fixes them). Returns `model`
    in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    g = torch.Generator().manual_seed(seed)
    for b in range(batches):
        idx = torch.randint(len(dataset), (batch_size,), generator=g).tolist()
        image = torch.stack([torch.from_numpy(dataset.crop_at(10**6 + b, i)) for i in idx])
        device = next(model.parameters()).device
        model(image[:, :1].to(device), image[:, 1:].to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()
