"""One step of Algorithm 1: the five input variants, their forward passes and the loss."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import losses
from .config import TrainConfig


def variants(vis: Tensor, ir: Tensor, comp: Tensor, rand: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The five inputs of Algorithm 1 (lines 12-19), in order: original, complementary
    masking, random masking, infrared only (visible dropped), visible only (infrared dropped).
    vis, ir: (B, 1, H, W); comp: (B, 2, H, W) keep masks (M_vi, M_ir); rand: (B, 1, H, W)."""
    zeros = torch.zeros_like(vis)
    return [(vis, ir), (vis * comp[:, :1], ir * comp[:, 1:]), (vis * rand, ir * rand), (zeros, ir), (vis, zeros)]


class FiveWay(nn.Module):
    """Runs the network on the five variants; one module, so that DistributedDataParallel sees
    one forward per step whichever way the passes are made.

    passes "separate": five train-mode forwards, so each variant's BatchNorm statistics are its
    own (the authors' code); "pooled": one forward of the five stacked (BN statistics pooled
    over clean, masked and all-zero inputs, which flattens the gates at inference: see
    docs/research/batchnorm.md; about 1.3x faster on a GPU).
    Returns the five fused outputs and the five (coarse, mid, fine) gate tuples, as float32.
    """

    def __init__(self, model: nn.Module, passes: str = "separate"):
        super().__init__()
        self.model, self.passes = model, passes

    def forward(self, pairs: list[tuple[Tensor, Tensor]]):
        if self.passes == "pooled":
            n = pairs[0][0].shape[0]
            fused, gates = self.model(torch.cat([v for v, _ in pairs]), torch.cat([i for _, i in pairs]))
            outs = list(fused.float().split(n))
            levels = [g.float().split(n) for g in gates]
            return outs, [tuple(lvl[k] for lvl in levels) for k in range(len(pairs))]
        runs = [self.model(v, i) for v, i in pairs]
        return [f.float() for f, _ in runs], [tuple(g.float() for g in gs) for _, gs in runs]


def compute_loss(outs: list[Tensor], gates: list[tuple[Tensor, ...]], vis: Tensor, ir: Tensor,
                 cfg: TrainConfig) -> dict[str, Tensor]:
    """Algorithm 1, lines 30-34: L_f on the original pass, L_inv over the complementary and
    random passes (their own gates), L_nec over the two dropouts; returns all four terms.
    Without interventions (the control, cfg.interventions False) `outs` is the clean pass alone
    and the loss is L_f alone: no L_inv, no L_nec, no gate regulariser."""
    if not cfg.interventions:
        l_f = losses.fusion_loss(outs[0], ir, vis, cfg.lambda1)
        return {"loss": l_f, "L_f": l_f}
    f, f_comp, f_rand, f_ir_only, f_vi_only = outs
    l_f = losses.fusion_loss(f, ir, vis, cfg.lambda1)
    l_inv = losses.intervention_loss(f, [f_comp, f_rand], [gates[1], gates[2]], cfg.model.eta, cfg.regulariser)
    l_nec = losses.necessity_loss(f, f_ir_only, f_vi_only, cfg.necessity)
    return {"loss": losses.total_loss(l_f, l_inv, l_nec, cfg.alpha, cfg.beta), "L_f": l_f, "L_inv": l_inv, "L_nec": l_nec}


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor], cfg: TrainConfig,
               device: torch.device, amp: bool = False) -> dict[str, float]:
    """One optimisation step on a PairDataset batch through `net` (a FiveWay, possibly DDP-wrapped),
    the forwards under bf16 autocast when `amp`. Returns the loss terms as floats. The control
    (cfg.interventions False) runs the original pair alone: one forward per sample, not five."""
    image = batch["image"].to(device, non_blocking=True)
    vis, ir = image[:, :1], image[:, 1:]
    if cfg.interventions:
        pairs = variants(vis, ir, batch["comp"].to(device, non_blocking=True),
                         batch["rand"].to(device, non_blocking=True))
    else:
        pairs = [(vis, ir)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        outs, gates = net(pairs)
    terms = compute_loss(outs, gates, vis, ir, cfg)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    return {k: v.item() for k, v in terms.items()}
