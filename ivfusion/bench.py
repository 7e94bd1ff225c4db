"""`ivfusion bench`: parameters, MACs, latency, throughput, peak memory and deviation of each
inference path, plus the time of the eleven metrics on one pair.

Timing is interleaved: every timed round runs each path once, in rotating order, so that a
busy machine slows all paths alike and the speed-up (reference median / path median) is
measured in the same run. Each row also gives the process CPU time per forward, which a busy
machine inflates far less than wall time. Deviation is the largest absolute difference of a
path's fused image (and gates) from the reference forward, on the benchmark input and on real
pairs at their native sizes (odd sizes included).

    ivfusion bench --threads 2                       # 256x256 and 640x480, reference vs fast
    ivfusion bench --sizes 640x480 --runs 20 --json bench.json
    ivfusion bench --ablation                        # what each optimisation step buys
    ivfusion bench --app                             # the Intervention Lab's request latency
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("IVFUSION_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def _parse_size(text: str) -> tuple[int, int]:
    """'640x480' (width x height) -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if min(w, h) < 4:
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must be at least 4 pixels")
    return h, w


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="latency, throughput, MACs, memory and deviation of each inference path",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None,
                   help="weights spec as for `ivfusion fuse` (a folder, .safetensors, the authors' .pth, hf://...); "
                        "default: the bundled weights if present, else 'synthetic' (random weights with random "
                        "BatchNorm statistics). 'untrained' and 'synthetic' are accepted.")
    p.add_argument("--sizes", default="256x256,640x480", help="comma-separated WIDTHxHEIGHT (default: 256x256,640x480)")
    p.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per path and size (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per path and size first (default 2)")
    p.add_argument("--paths", default=None,
                   help="comma-separated paths to time, from reference, fast, fast-bf16 (default: reference, fast, "
                        "and fast-bf16 where bf16 is native)")
    p.add_argument("--ablation", action="store_true",
                   help="also time each optimisation step alone (BN folding, channels-last, attention, fusion)")
    p.add_argument("--pairs", action="append", default=None,
                   help="folder with ir/ and vi/ for the deviation check, repeatable (default: shared "
                        "data roadscene/test and msrs/train)")
    p.add_argument("--max-pairs", type=int, default=4, help="pairs per folder for the deviation check (0: all; default 4)")
    p.add_argument("--metrics-repeats", type=int, default=3, help="repeats for the metrics timing (0: skip; default 3)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON to this file")
    p.add_argument("--app", action="store_true", help="benchmark the Intervention Lab request instead (ivfusion.lab)")
    p.add_argument("--requests", type=int, default=100, help="requests for --app (default 100)")
    p.set_defaults(func=run)
    return p


def _load(spec: str | None):
    from .fast import synthetic_model
    from .hub import DEFAULT_WEIGHTS, load_model

    if spec == "synthetic" or (spec is None and not os.environ.get("IVFUSION_WEIGHTS")
                               and not (DEFAULT_WEIGHTS / "model.safetensors").is_file()):
        return synthetic_model(0)
    return load_model(spec)


def _param_counts(model) -> dict:
    from .config import ISFuseConfig
    from .modeling import ISFuse

    full = ISFuse(ISFuseConfig(**{**model.config.to_dict(), "with_unused": True}))
    return {"used": model.num_parameters(used_only=True), "with_unused": full.num_parameters(used_only=False)}


def count_macs(net, vis_y, ir) -> int:
    """Multiply-accumulates of one forward from torch's FLOP counter (MACs = FLOPs / 2; it
    counts convolutions and matrix products, not element-wise operations)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .fast import FastConv

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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory(net, vis_y, ir, device) -> dict:
    """Peak memory of one forward: CUDA max_memory_allocated, or on Linux the resident-set
    high-water mark (VmHWM) reset through /proc/self/clear_refs, minus the RSS before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            net(vis_y, ir)
        torch.cuda.synchronize()
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20, "extra_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
                "kind": "cuda max_memory_allocated"}
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kb("VmRSS")
        with torch.inference_mode():
            net(vis_y, ir)
        peak = _status_kb("VmHWM")
        return {"peak_mb": peak / 1024, "extra_mb": (peak - base) / 1024, "kind": "RSS high-water mark (VmHWM)"}
    except OSError:
        with torch.inference_mode():
            net(vis_y, ir)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_mb": peak / 1024, "extra_mb": None, "kind": "process ru_maxrss (since start)"}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _bench_input(height: int, width: int, batch: int, device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A real MSRS pair resized to height x width (random images if the data is missing)."""
    import torch.nn.functional as F

    from .fast import read_pair

    data = _shared_dir() / "data" / "msrs" / "train"
    try:
        vis, ir = read_pair(data / "ir" / "00001D.png", data / "vi" / "00001D.png")
        src = "msrs/train 00001D"
        if vis.shape[-2:] != (height, width):
            vis, ir = (F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False).clamp_(0, 1)
                       for t in (vis, ir))
            src += f" resized to {width}x{height}"
    except Exception:
        gen = torch.Generator().manual_seed(0)
        vis, ir = torch.rand(1, 1, height, width, generator=gen), torch.rand(1, 1, height, width, generator=gen)
        src = "random (shared data not found)"
    return vis.repeat(batch, 1, 1, 1).to(device), ir.repeat(batch, 1, 1, 1).to(device), src


def _nets(model, device, paths: list[str], ablation: bool) -> dict:
    from .fast import ChannelsLast, build_fast, fold_bn_model

    nets = {}
    for name in paths:
        if name == "reference":
            nets[name] = model
        elif name == "fast":
            nets[name] = build_fast(model, device)
        elif name == "fast-bf16":
            nets[name] = build_fast(model, device, torch.bfloat16)
        else:
            raise SystemExit(f"unknown path {name!r}; accepted: reference, fast, fast-bf16")
    if ablation:
        folded = fold_bn_model(model)
        nets["abl: BN folded"] = folded
        nets["abl: BN folded + channels-last"] = ChannelsLast(fold_bn_model(model))
        nets["abl: + fast attention (unfused act)"] = build_fast(model, device, fuse_act=False, patch_first=False)
        nets["abl: + fused conv+act"] = build_fast(model, device, patch_first=False)
    return nets


def time_paths(nets: dict, vis_y, ir, runs: int, warmup: int, device) -> dict:
    """Interleaved timing: {name: {"wall": [...], "cpu": [...]}} (seconds per forward)."""
    names = list(nets)
    out = {n: {"wall": [], "cpu": []} for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                nets[n](vis_y, ir)
        _sync(device)
        for r in range(runs):
            for n in names[r % len(names):] + names[:r % len(names)]:
                c0, t0 = time.process_time(), time.perf_counter()
                nets[n](vis_y, ir)
                _sync(device)
                out[n]["wall"].append(time.perf_counter() - t0)
                out[n]["cpu"].append(time.process_time() - c0)
    return out


def _p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def run_bench(args) -> dict:
    from .fast import BOUND, bf16_native, max_deviation, real_pairs
    from .predictor import resolve_device

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    model = _load(args.weights).to(device).eval()
    from .hub import describe

    if args.paths:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    else:
        paths = ["reference", "fast"] + (["fast-bf16"] if device.type == "cuda" or bf16_native() else [])
    if "reference" not in paths:
        paths.insert(0, "reference")
    nets = _nets(model, device, paths, args.ablation)
    from .fast import resolve_path

    report = {
        "weights": describe(model),
        "device": str(device),
        "cpu": _cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_native(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "auto_path": resolve_path("auto", device),
        "batch": args.batch,
        "runs": args.runs,
        "warmup": args.warmup,
        "bound": BOUND,
        "params": _param_counts(model),
        "sizes": [],
    }
    for height, width in [_parse_size(s) for s in args.sizes.split(",") if s.strip()]:
        vis_y, ir, src = _bench_input(height, width, args.batch, device)
        entry = {"size": f"{width}x{height}", "input": src, "macs": {}, "paths": {}}
        for name, net in nets.items():
            entry["macs"][name] = count_macs(net, vis_y, ir)
        with torch.inference_mode():
            ref_out = model(vis_y, ir)
            for name, net in nets.items():
                out = net(vis_y, ir)
                entry["paths"][name] = {
                    "max_dev": (out[0].float() - ref_out[0].float()).abs().max().item(),
                    "max_dev_gates": max((a.float() - b.float()).abs().max().item() for a, b in zip(out[1], ref_out[1])),
                }
        for name, net in nets.items():
            entry["paths"][name]["memory"] = _peak_memory(net, vis_y, ir, device)
        timing = time_paths(nets, vis_y, ir, args.runs, args.warmup, device)
        ref_med = statistics.median(timing["reference"]["wall"])
        ref_min = min(timing["reference"]["wall"])
        ref_cpu = statistics.median(timing["reference"]["cpu"])
        for name in nets:
            wall, cpu = timing[name]["wall"], timing[name]["cpu"]
            med = statistics.median(wall)
            entry["paths"][name].update({
                "median_s": med, "p90_s": _p90(wall), "min_s": min(wall), "cpu_median_s": statistics.median(cpu),
                "images_per_s": args.batch / med, "speedup": ref_med / med, "speedup_min": ref_min / min(wall),
                "cpu_speedup": ref_cpu / statistics.median(cpu) if statistics.median(cpu) > 0 else None,
                "wall_s": wall,
            })
        report["sizes"].append(entry)
    # deviation on real pairs at their native sizes
    folders = args.pairs or [str(_shared_dir() / "data" / "roadscene" / "test"), str(_shared_dir() / "data" / "msrs" / "train")]
    pairs = []
    for folder in folders:
        if Path(folder, "ir").is_dir():
            pairs += real_pairs(folder, limit=args.max_pairs or None)
    pairs = [(n, v.to(device), i.to(device)) for n, v, i in pairs]
    report["real_pairs"] = {"folders": folders, "count": len(pairs),
                            "sizes": sorted({f"{v.shape[-1]}x{v.shape[-2]}" for _, v, _ in pairs}),
                            "max_dev": {name: max_deviation(model, net, pairs) for name, net in nets.items() if name != "reference"}}
    if args.metrics_repeats > 0:
        from .metrics import time_metrics

        try:
            report["metrics_time_s"] = time_metrics(repeats=args.metrics_repeats, shared_dir=_shared_dir())
        except Exception as e:  # no shared data: say so, do not fail the benchmark
            report["metrics_time_s"] = {"error": f"{type(e).__name__}: {e}"}
    report["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_report(r: dict) -> str:
    lines = [
        f"ivfusion bench: {r['weights']}",
        f"device {r['device']} ({r['cpu']}, {r['cpu_capability']}, bf16 native: {r['bf16_native']}), "
        f"{r['threads']} threads, torch {r['torch']}, batch {r['batch']}, {r['runs']} timed runs after {r['warmup']} warm-up, "
        f"interleaved; speed-up = reference median / path median, min x = fastest reference run / fastest "
        f"path run, cpu = process CPU time per forward",
        f"auto path on this device: {r['auto_path']}",
        f"parameters: {r['params']['used']:,} used by the forward pass, {r['params']['with_unused']:,} with the "
        f"checkpoint's unused modules",
    ]
    for e in r["sizes"]:
        lines.append("")
        lines.append(f"{e['size']} ({e['input']}); MACs from torch.utils.flop_counter (FLOPs/2)")
        lines.append(f"  {'path':36s} {'GMACs':>6s} {'median':>8s} {'p90':>8s} {'img/s':>7s} {'speed-up':>8s} {'min x':>6s} "
                     f"{'cpu/fwd':>8s} {'cpu x':>6s} {'max dev':>9s} {'(x255)':>7s} {'peak MB':>8s}")
        for name, p in e["paths"].items():
            mem = p["memory"]["extra_mb"]
            lines.append(
                f"  {name:36s} {e['macs'][name] / 1e9:6.2f} {p['median_s'] * 1e3:6.0f}ms {p['p90_s'] * 1e3:6.0f}ms "
                f"{p['images_per_s']:7.2f} {p['speedup']:7.2f}x {p['speedup_min']:5.2f}x {p['cpu_median_s'] * 1e3:6.0f}ms "
                f"{(p['cpu_speedup'] or 0):5.2f}x {p['max_dev']:9.2e} {p['max_dev'] * 255:7.4f} "
                f"{mem if mem is None else f'{mem:8.0f}'}")
    rp = r["real_pairs"]
    lines.append("")
    lines.append(f"deviation from the reference on {rp['count']} real pairs at native sizes ({', '.join(rp['sizes'])}); "
                 f"bound {r['bound']:.5f} (2/255):")
    for name, d in rp["max_dev"].items():
        ok = "holds" if d["fused"] <= r["bound"] else "EXCEEDS"
        lines.append(f"  {name:36s} fused {d['fused']:.2e} ({d['fused'] * 255:.4f}/255, {d['pair']} {d['size']}), "
                     f"gates {d['gates']:.2e}: {ok}")
    m = r.get("metrics_time_s")
    if isinstance(m, dict) and "evaluate_pair" in m:
        lines.append(f"eleven metrics on one 640x480 pair (evaluate_pair, best of repeats): {m['evaluate_pair'] * 1e3:.0f} ms")
    elif m:
        lines.append(f"metrics timing: {m}")
    lines.append(f"process peak RSS: {r['process_peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def run(args) -> int:
    if args.app:
        try:
            from .lab import benchmark_app
        except ImportError as e:
            print(f"ivfusion bench --app: the Intervention Lab (ivfusion.lab.benchmark_app) is not available: {e}",
                  file=sys.stderr)
            return 2
        h, w = _parse_size(args.sizes.split(",")[-1])
        result = benchmark_app(weights=args.weights, height=h, width=w, requests=args.requests, threads=args.threads)
        print(json.dumps(result, indent=2, default=str))
        if args.json_path:
            Path(args.json_path).write_text(json.dumps({"app": result}, indent=2, default=str))
        return 0
    report = run_bench(args)
    print(format_report(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
