"""The training loop (nanoGPT-style: one config, one readable loop), validation, checkpoints."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .. import losses
from ..cli_flags import failure_reason, out_folder_problem
from ..data import find_pairs, load_scored_pair
from ..device import bf16_native, resolve_device
from ..hub import save_weights
from ..levels import gate_stats
from ..modeling import ISFuse
from .config import ConfigError, TrainConfig
from .dataset import PairDataset, QuotaBatchSampler, StepBatchSampler
from .step import FiveWay, train_step

def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "cosine":
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    return cfg.lr


class TrainingDiverged(RuntimeError):
    """The loss stopped being finite; the command line prints it as one line."""


def training_precision(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: cfg.amp when set, else where bf16 is native."""
    if cfg.amp is not None:
        return cfg.amp
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bf16_native()


def main(cfg: TrainConfig, echo=print) -> dict:
    """Train as `cfg` says; returns a summary. User errors (bad folders, weights, sizes, a
    resume with missing files) raise ConfigError, FileNotFoundError or WeightsError before
    the first step."""
    # ---- processes, devices, seeds -------------------------------------------------------
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"--device: {e}") from None
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
        raise ConfigError(f"--batch-size {cfg.batch_size} must divide by the {world} processes")
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        # fixed crop sizes: let cuDNN pick the fastest kernels (determinism is promised on CPU only)
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    problem = out_folder_problem(out)
    if problem:
        raise ConfigError(f"--out {problem}")

    # ---- data ----------------------------------------------------------------------------
    try:  # the data's own errors (no pairs, unreadable or unregistered files) name the problem
        dataset = PairDataset(cfg.data, cfg.crop, cfg.seed, cfg.masks, cfg.holdout, cfg.augment)
        val_sets = validation_sets(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    missing = sorted(set(cfg.holdout) - {n.rsplit("/", 1)[-1] for n in dataset.held_out})
    if missing:
        raise ConfigError(f"--holdout: no pair named {', '.join(missing)} in {', '.join(cfg.data)}")
    if master and (dataset.skipped or dataset.held_out):
        echo(f"{len(dataset.skipped)} pairs smaller than {cfg.crop}x{cfg.crop} and {len(dataset.held_out)} held-out "
             f"pairs left out; training on {len(dataset)}")
    if master:  # a file without a partner is never skipped silently
        for folder in [*cfg.data, *cfg.val]:
            note = find_pairs(folder, allow_empty=True).unmatched_note(folder)
            if note:
                echo(note)

    # ---- model and optimiser, or the state of an interrupted run --------------------------
    model = ISFuse(cfg.model).to(device)
    amp = training_precision(cfg, device)
    if device.type == "cpu":  # oneDNN's convolutions run about 1.5x faster on NHWC, fp32 or bf16
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best, history, elapsed = 0, math.inf, [], 0.0
    state_path = out / "resume.pt"
    if cfg.resume and state_path.is_file():
        if not (out / "log.jsonl").is_file():
            raise ConfigError(f"--resume: {state_path} is there but {out / 'log.jsonl'} is missing; "
                              "restore it, or start a new run in another --out")
        step, best, elapsed = _load_state(state_path, model, optimizer)
        history = [h for h in _read_log(out / "log.jsonl") if h["step"] <= step]
    else:
        if cfg.resume and not (out / "train_config.json").is_file():
            raise ConfigError(f"--resume: {out} holds no run (no train_config.json); drop --resume to start one there")
        if cfg.resume and master:  # killed before its first checkpoint: nothing to lose
            echo(f"--resume: no {state_path} yet, starting from step 0")
        if cfg.init:
            from ..hub import load_model

            model.load_state_dict(load_model(cfg.init).state_dict())
    saved_at = step if step else None  # the step of the last checkpoint on disk, for the divergence message
    if master:
        echo(f"training on {device} in {'bf16 autocast' if amp else 'fp32'}")
    model.train()
    net = FiveWay(model, cfg.passes)
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(net)
    if master:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        _rewrite_log(out, history)

    if cfg.augment.night_share > 0:
        sampler = QuotaBatchSampler(dataset.night, cfg.batch_size, rank, world, cfg.seed, step, cfg.steps,
                                    cfg.augment.night_share)
    else:
        sampler = StepBatchSampler(len(dataset), cfg.batch_size, rank, world, cfg.seed, step, cfg.steps)
    if master and cfg.augment.night_share > 0:
        echo(f"night quota: {sampler.quota[1]} of every {cfg.batch_size} crops from the {sum(dataset.night)} "
             f"night pairs, {sampler.quota[0]} from the {len(dataset) - sum(dataset.night)} others")
    # no random state lives in the workers (every draw is keyed by (seed, step, index)), so
    # restarting the loader at `step` continues the run exactly
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=False, prefetch_factor=2 if cfg.workers else None)

    # ---- the loop ------------------------------------------------------------------------
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, disable=not master, dynamic_ncols=True)
    t0 = time.time() - elapsed
    for batch in loader:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        terms = train_step(net, optimizer, batch, cfg, device, amp)
        step += 1
        if not math.isfinite(terms["loss"]):  # the checkpoints on disk stay the last finite ones
            kept = (f"the last checkpoint in {out} is from step {saved_at}" if saved_at else
                    f"no checkpoint was written (the first was due at step {min(cfg.val_every, cfg.steps)})")
            raise TrainingDiverged(f"the loss is {terms['loss']} at step {step}; {kept}; lower --lr (now {cfg.lr:g})")

        if master and (step % cfg.log_every == 0 or step == cfg.steps):
            rec = {"step": step, **terms, "lr": lr_at(cfg, step - 1), "time_s": round(time.time() - t0, 2)}
            history.append(rec)
            _append_log(out, rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", L_f=f"{rec['L_f']:.4f}")
        bar.update(1)

        if step % cfg.val_every == 0 or step == cfg.steps:
            if master:
                val = validate_sets(model, val_sets, device, cfg.lambda1) if val_sets else {}
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
            saved_at = step
            if distributed:
                dist.barrier()
    bar.close()
    result = {"steps": step, "best_val_L_f": best, "wall_s": round(time.time() - t0, 1), "out": str(out)}
    if master:
        (out / "summary.json").write_text(json.dumps(result, indent=2))
    if distributed:
        dist.destroy_process_group()
    return result


def validation_sets(cfg: TrainConfig) -> dict[str, list]:
    """{label: [data.ScoredPair, ...]} for each --val folder, its first val_pairs pairs. A folder
    that is also a training folder gives its held-out pairs only (none held out: an error), so
    that validation never scores a pair the run trains on."""
    train = {Path(d).resolve() for d in cfg.data}
    sets = {}
    for folder in cfg.val:
        pairs = find_pairs(folder)
        label = "/".join(Path(folder).resolve().parts[-2:])
        if Path(folder).resolve() in train:
            pairs = [p for p in pairs if p[0] in cfg.holdout]
            if not pairs:
                raise ConfigError(f"--val {folder} is a training folder and none of its pairs is held out; "
                                  "name them with --holdout, or validate on another folder")
            label += " (held out)"
        sets[label] = [load_scored_pair(ir, vi) for _, ir, vi in list(pairs)[: cfg.val_pairs]]
    return sets


def validate_sets(model: ISFuse, sets: dict[str, list], device, lambda1: float) -> dict:
    """One validation record: the first folder's numbers as flat val_* keys (val_L_f chooses
    best.pth), and every folder's under "val": {label: numbers}."""
    per = {label: validate(model, pairs, device, lambda1) for label, pairs in sets.items()}
    return {**next(iter(per.values())), "val": per}


@torch.no_grad()
def validate(model: ISFuse, pairs, device, lambda1: float) -> dict:
    """On full-size pairs in eval mode: mean L_f, Qabf/SSIM/VIF/MI, and per gate level the
    spatial std and the 1st-99th percentile span (how much structure the gates have); the mean
    of the fused image and of its two sources (0-255), and val_above_darker, the number of
    pairs whose fused mean is at or above the darker source's (a model that darkens the night
    puts its output below both inputs)."""
    try:
        from .. import metrics
    except ImportError:
        metrics = None
    was_training = model.training
    model.eval()
    rows = []
    for pair in pairs:
        y, ir = pair.visible_y, pair.infrared
        vis_t, ir_t = torch.from_numpy(y)[None, None].to(device), torch.from_numpy(ir)[None, None].to(device)
        fused, gates = model(vis_t, ir_t)
        row = {"val_L_f": losses.fusion_loss(fused, ir_t, vis_t, lambda1).item()}
        f_mean, y_mean, ir_mean = (float(a.mean()) * 255 for a in (fused.clamp(0, 1).float().cpu().numpy(), y, ir))
        row.update({"val_fused_mean": f_mean, "val_visible_mean": y_mean, "val_infrared_mean": ir_mean,
                    "val_above_darker": float(f_mean >= min(y_mean, ir_mean))})
        for name, stats in gate_stats(gates).items():
            row[f"val_gate_std_{name}"], row[f"val_gate_span_{name}"] = stats["std"], stats["p1_p99"]
        if metrics is not None:
            # the fused image as `ivfusion evaluate` scores its written file: the same numbers
            f = metrics.fused_grey(fused[0, 0].float().cpu().numpy(), pair.visible)
            scores = metrics.evaluate_pair(pair.infrared_grey, pair.visible_grey, f)
            row.update({f"val_{k}": float(scores[k]) for k in ("Qabf", "SSIM", "VIF", "MI")})
        rows.append(row)
    model.train(was_training)
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["val_above_darker"], out["val_pairs"] = int(sum(r["val_above_darker"] for r in rows)), len(rows)
    return out


def _save_state(path: Path, model, optimizer, step: int, best: float, elapsed: float) -> None:
    """Everything a killed run needs to go on exactly; written atomically."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "best": best, "elapsed_s": elapsed}, tmp)
    os.replace(tmp, path)


def _load_state(path: Path, model, optimizer) -> tuple[int, float, float]:
    """Load what `_save_state` wrote into model and optimizer; returns (step, best, elapsed_s).
    A torn or foreign file, or one whose shapes do not fit the configured network, is a
    ConfigError naming the problem."""
    advice = "restore it, or start a new run in another --out"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError...
        raise ConfigError(f"--resume: {path} is not a readable training state "
                          f"({failure_reason(e).split('. ')[0]}); {advice}") from None
    keys = ("model", "optimizer", "step", "best", "elapsed_s")
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"--resume: {path} lacks {', '.join(missing)}; {advice}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["step"]), float(state["best"]), float(state["elapsed_s"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__)[:200]
        raise ConfigError(f"--resume: {path} does not fit the network and optimiser of "
                          f"{path.parent / 'train_config.json'} ({detail}); {advice}") from None


def _read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl; a last line torn by a kill is dropped (the resumed run
    rewrites the log from its checkpoint's step anyway)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ConfigError(f"--resume: {path} line {i + 1} is not JSON; only a torn last line is tolerated") from None
    return records


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
    for k in [k for k in ("loss", "L_f", "L_inv", "L_nec") if train and k in train[0]]:  # the control: loss, L_f
        ax.plot([h["step"] for h in train], [h[k] for h in train], label=k)
    ax.plot([h["step"] for h in val], [h["val_L_f"] for h in val], "k--o", ms=3, label="val L_f")
    ax.set_xlabel("step"), ax.set_title("losses"), ax.legend(fontsize=7)
    for ax, k in zip(axes[0, 1:], val_keys):
        ax.plot([h["step"] for h in val], [h[k] for h in val], "o-", ms=3)
        ax.set_xlabel("step"), ax.set_title(k.removeprefix("val_") + " (validation)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)
