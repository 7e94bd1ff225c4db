"""Training ISFuse: Algorithm 1 of the supplementary, top to bottom.

    ivfusion train --data DIR [DIR ...] --val DIR --out runs/isfuse [--steps N] [--config cfg.yaml]
    torchrun --nproc_per_node=N -m ivfusion train ...      (DistributedDataParallel)

Each step draws, per sample, a complementary mask pair, a random mask and both modality
dropouts, runs the five variants (original, complementary, random, IR only, visible only)
through the network (in one batched forward by default), and minimises
L = L_f + alpha * L_inv + beta * L_nec (see `ivfusion.losses`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import losses
from .config import ISFuseConfig
from .data import PairDataset, find_pairs, load_pair
from .hub import save_weights
from .interventions import MaskConfig, sample_mask_batch
from .modeling import ISFuse
from .device import resolve_device


@dataclass
class TrainConfig:
    """Every training setting; the defaults are the paper's where it gives one."""

    data: list[str] = field(default_factory=lambda: ["../shared/data/roadscene/train", "../shared/data/msrs/train"])
    val: str | None = "../shared/data/roadscene/test"
    out: str = "runs/isfuse"
    # the objective (supplementary Algorithm 1)
    alpha: float = 0.1  # weight of L_inv
    beta: float = 0.05  # weight of L_nec
    lambda1: float = 1.0  # weight of the Laplacian term inside L_f
    eta: float = 0.3
    necessity: str = "reference"  # or "contribution", see losses.necessity_loss
    # the network
    r: int = 8
    shared_encoder: bool = False
    init: str | None = None  # weights spec to start from (fine-tuning); None = random init
    # the interventions
    mask_size: int = 16
    min_holes: int = 1
    max_holes: int = 6
    disk_prob: float = 0.0
    # optimisation
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine" (decays to lr/10 after `warmup` steps)
    warmup: int = 0
    batch_size: int = 16  # global, split over the processes
    crop: int = 128
    steps: int = 2000
    batched_passes: bool = True  # the five variants in one forward (BN sees them together)
    # bookkeeping
    val_every: int = 200
    val_pairs: int = 10
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = False  # bf16 autocast
    threads: int = 0  # torch CPU threads, 0 = torch's default
    resume: bool = False


def main(cfg: TrainConfig) -> dict:
    # ---- processes, devices, seeds -------------------------------------------------------
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    master = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide by the {world} processes")
    per_rank = cfg.batch_size // world
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        # fixed crop sizes: let cuDNN pick the fastest kernels (determinism is promised on CPU only)
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)

    # ---- data ----------------------------------------------------------------------------
    dataset = PairDataset(cfg.data, cfg.crop, cfg.seed)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} pairs cannot fill one batch of {cfg.batch_size}")
    val_set = [load_pair(ir, vi) for _, ir, vi in find_pairs(cfg.val)[: cfg.val_pairs]] if cfg.val else []
    masks_cfg = MaskConfig(cfg.mask_size, cfg.min_holes, cfg.max_holes, cfg.disk_prob)

    # ---- model and optimiser, or the state of an interrupted run --------------------------
    model = ISFuse(ISFuseConfig(r=cfg.r, eta=cfg.eta, shared_encoder=cfg.shared_encoder)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best, history, elapsed = 0, math.inf, [], 0.0
    state_path = out / "resume.pt"
    if cfg.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, elapsed = int(state["step"]), float(state["best"]), float(state["elapsed_s"])
        torch.set_rng_state(state["torch_rng"])
        history = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
        history = [h for h in history if h["step"] <= step]
    else:
        if cfg.resume and master:
            print(f"--resume: no {state_path} yet, starting from step 0")
        if cfg.init:
            from .hub import load_model

            model.load_state_dict(load_model(cfg.init).state_dict())
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    if master:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        _rewrite_log(out, history)

    def lr_at(s: int) -> float:
        if s < cfg.warmup:
            return cfg.lr * (s + 1) / cfg.warmup
        if cfg.lr_schedule == "cosine":
            t = (s - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
        return cfg.lr

    # ---- the loop ------------------------------------------------------------------------
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, disable=not master, dynamic_ncols=True)
    t0 = time.time() - elapsed
    while step < cfg.steps:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)[offset * per_rank : steps_per_epoch * per_rank]
        for start in range(0, len(order), per_rank):
            if step >= cfg.steps:
                break
            batch = torch.from_numpy(np.stack([dataset.sample(i, epoch) for i in order[start : start + per_rank]]))
            vis, ir = batch[:, :1].to(device), batch[:, 1:].to(device)
            n, (h, w) = vis.shape[0], vis.shape[-2:]

            # intervention variants (Algorithm 1, lines 12-19), seeded by (seed, step, rank)
            rng = np.random.default_rng([cfg.seed, step, rank])
            mc_vi, mc_ir = sample_mask_batch("complementary", n, h, w, rng, masks_cfg, device)
            mr, _ = sample_mask_batch("random", n, h, w, rng, masks_cfg, device)
            zeros = torch.zeros_like(vis)
            variants = [(vis, ir), (vis * mc_vi, ir * mc_ir), (vis * mr, ir * mr), (zeros, ir), (vis, zeros)]

            # five forward passes (lines 20-29)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                if cfg.batched_passes:
                    fused_all, gates_all = net(torch.cat([v for v, _ in variants]), torch.cat([i for _, i in variants]))
                    outs = fused_all.float().split(n)
                    gate_levels = [g.float().split(n) for g in gates_all]
                    gates = [[lvl[k] for lvl in gate_levels] for k in range(5)]
                else:
                    passes = [net(v, i) for v, i in variants]
                    outs = [p[0].float() for p in passes]
                    gates = [[g.float() for g in p[1]] for p in passes]

            # losses (lines 30-34)
            f, f_comp, f_rand, f_ir_only, f_vi_only = outs
            l_f = losses.fusion_loss(f, ir, vis, cfg.lambda1)
            g_bars = [losses.mean_gate(gates[k], (h, w)) for k in (1, 2)]
            l_inv = losses.intervention_loss(f, [f_comp, f_rand], g_bars, cfg.eta)
            l_nec = losses.necessity_loss(f, f_ir_only, f_vi_only, cfg.necessity)
            loss = losses.total_loss(l_f, l_inv, l_nec, cfg.alpha, cfg.beta)

            # update (line 35)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1

            if master and (step % cfg.log_every == 0 or step == cfg.steps):
                rec = {"step": step, "loss": loss.item(), "L_f": l_f.item(), "L_inv": l_inv.item(),
                       "L_nec": l_nec.item(), "lr": lr_at(step - 1), "time_s": round(time.time() - t0, 2)}
                history.append(rec)
                _append_log(out, rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", L_f=f"{rec['L_f']:.4f}")
            bar.update(1)

            if step % cfg.val_every == 0 or step == cfg.steps:
                if master:
                    val = validate(model, val_set, device, cfg.lambda1) if val_set else {}
                    if val:
                        val["step"] = step
                        history.append(val)
                        _append_log(out, val)
                    if val and val["val_L_f"] < best:
                        best = val["val_L_f"]
                        save_weights(model, out / "best")
                    save_weights(model, out / "last")
                    _save_state(state_path, model, optimizer, step, best, time.time() - t0)
                    _plot(out, history)
                if distributed:
                    dist.barrier()
    bar.close()
    result = {"steps": step, "best_val_L_f": best, "wall_s": round(time.time() - t0, 1), "out": str(out)}
    if master:
        (out / "summary.json").write_text(json.dumps(result, indent=2))
    if distributed:
        dist.destroy_process_group()
    return result


@torch.no_grad()
def validate(model: ISFuse, pairs, device, lambda1: float) -> dict:
    """Mean L_f and, when ivfusion.metrics is present, Qabf/SSIM/VIF/MI on full-size pairs."""
    try:
        from . import metrics
    except ImportError:
        metrics = None
    was_training = model.training
    model.eval()
    rows = []
    for y, ir in pairs:
        vis_t, ir_t = torch.from_numpy(y)[None, None].to(device), torch.from_numpy(ir)[None, None].to(device)
        fused, _ = model(vis_t, ir_t)
        row = {"val_L_f": losses.fusion_loss(fused, ir_t, vis_t, lambda1).item()}
        if metrics is not None:
            f8 = np.rint(fused[0, 0].float().cpu().numpy() * 255)
            scores = metrics.evaluate_pair(np.rint(ir * 255), np.rint(y * 255), f8)
            row.update({f"val_{k}": scores[k] for k in ("Qabf", "SSIM", "VIF", "MI")})
        rows.append(row)
    model.train(was_training)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _save_state(path: Path, model, optimizer, step: int, best: float, elapsed: float) -> None:
    """Everything a killed run needs to go on exactly; written atomically."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "best": best, "elapsed_s": elapsed, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def _append_log(out: Path, rec: dict) -> None:
    with open(out / "log.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _rewrite_log(out: Path, history: list[dict]) -> None:
    (out / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def _plot(out: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if "loss" in h]
    val = [h for h in history if "val_L_f" in h]
    val_keys = [k for k in ("val_Qabf", "val_SSIM", "val_VIF", "val_MI") if val and k in val[0]]
    fig, axes = plt.subplots(1, 1 + len(val_keys), figsize=(4 * (1 + len(val_keys)), 3.2), squeeze=False)
    ax = axes[0, 0]
    for k in ("loss", "L_f", "L_inv", "L_nec"):
        ax.plot([h["step"] for h in train], [h[k] for h in train], label=k)
    ax.plot([h["step"] for h in val], [h["val_L_f"] for h in val], "k--o", ms=3, label="val L_f")
    ax.set_xlabel("step"), ax.set_title("losses"), ax.legend(fontsize=7)
    for ax, k in zip(axes[0, 1:], val_keys):
        ax.plot([h["step"] for h in val], [h[k] for h in val], "o-", ms=3)
        ax.set_xlabel("step"), ax.set_title(k.removeprefix("val_") + " (validation)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


# ---- command line -----------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train ISFuse (Algorithm 1); torchrun-ready",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML or JSON file of TrainConfig fields (flags override it)")
    for f in dataclasses.fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "data":
            p.add_argument(name, nargs="+", default=None, help="folders holding ir/ and vi/")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(name, type=kind, default=None)
    p.set_defaults(func=run)


def config_from_args(args) -> TrainConfig:
    """Defaults < --config file < flags. With --resume, the interrupted run's saved config
    takes the place of the defaults, so `--out DIR --resume` alone continues that run."""
    values = {}
    saved = Path(args.out or TrainConfig.out) / "train_config.json"
    if args.resume and saved.is_file():
        values = json.loads(saved.read_text())
    if args.config:
        text = Path(args.config).read_text()
        if args.config.endswith((".yaml", ".yml")):
            import yaml

            values.update(yaml.safe_load(text) or {})
        else:
            values.update(json.loads(text))
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        if set(values) - names:
            raise SystemExit(f"{args.config}: unknown fields {sorted(set(values) - names)}")
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if values.get("val") in ("", "none", "None"):
        values["val"] = None
    return TrainConfig(**values)


def run(args) -> int:
    result = main(config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))
    return 0
