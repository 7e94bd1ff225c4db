"""`ivfusion bench --train`: seconds per training step (Algorithm 1: five separate passes, Adam)
in fp32 and under bf16 autocast, on the machine at hand, with the CPU named.

The steps are the trainer's own (`ivfusion.train.step.train_step` on a `PairDataset` batch of
real pairs), in the trainer's memory layout; only the optimiser state is thrown away.
"""
from __future__ import annotations

import statistics
import time

import torch

from ..device import bf16_native, resolve_device
from ..modeling import ISFuse
from ..train import TrainConfig
from ..train.dataset import PairDataset
from ..train.step import FiveWay, train_step
from ..device import cpu_name


def time_train_steps(data: list[str], crop: int, batch: int, amp: bool, steps: int, warmup: int,
                     device: torch.device, channels_last: bool) -> list[float]:
    """Seconds of each of `steps` timed training steps (after `warmup` untimed ones)."""
    cfg = TrainConfig(data=data, val=None, crop=crop, batch_size=batch, amp=amp)
    torch.manual_seed(0)
    model = ISFuse(cfg.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    net, opt = FiveWay(model, cfg.passes), torch.optim.Adam(model.parameters(), lr=cfg.lr)
    dataset = PairDataset(data, crop, 0, cfg.masks)
    times = []
    for step in range(warmup + steps):
        batch_data = torch.utils.data.default_collate([dataset[(step, i % len(dataset))] for i in range(batch)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(net, opt, batch_data, cfg, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def run_train_bench(args) -> dict:
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    data = args.pairs or ["../shared/data/msrs/train"]
    rows = []
    precisions = [False] + ([True] if device.type == "cuda" or bf16_native() else [])
    for amp in precisions:
        for channels_last in ((False, True) if device.type == "cpu" else (False,)):
            times = time_train_steps(data, args.train_crop, args.train_batch, amp, args.runs, args.warmup,
                                     device, channels_last)
            rows.append({"precision": "bf16 autocast" if amp else "fp32", "channels_last": channels_last,
                         "median_s": statistics.median(times), "min_s": min(times), "steps": len(times)})
    dataset = PairDataset(data, args.train_crop, 0)
    t0 = time.perf_counter()
    for step in range(5):
        torch.utils.data.default_collate([dataset[(step, i % len(dataset))] for i in range(args.train_batch)])
    batch_ms = (time.perf_counter() - t0) / 5 * 1e3
    name = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    report = {"device": str(device), "cpu": name, "threads": args.threads, "crop": args.train_crop,
              "batch": args.train_batch, "bf16_native": bf16_native(), "batch_ms": batch_ms, "rows": rows}
    lines = [f"training step (five separate passes + Adam), crop {args.train_crop}, batch {args.train_batch}, "
             f"{device} ({name}), {args.threads} threads, bf16 native: {bf16_native()}",
             f"{'precision':<15}{'layout':<15}{'median s/step':>14}{'min':>8}{'ratio':>8}"]
    base = rows[0]["median_s"]
    for r in rows:
        layout = "channels_last" if r["channels_last"] else "contiguous"
        lines.append(f"{r['precision']:<15}{layout:<15}{r['median_s']:>14.2f}{r['min_s']:>8.2f}{base / r['median_s']:>7.2f}x")
    lines.append(f"making one batch (crops and masks, in the main process): {batch_ms:.1f} ms")
    print("\n".join(lines))
    return report
