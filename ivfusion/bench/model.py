"""The model benchmark: parameters, MACs, latency, throughput, peak memory and deviation of each
inference path, the cost of `Fuser.intervene` relative to one forward pass, and the time of the
eleven metrics on one pair. See `ivfusion bench --help`."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from ..data import load_pair
from ..device import cpu_name
from .macs import count_macs
from .paths import shared_dir


def _load(spec: str | None):
    from ..hub import DEFAULT_WEIGHTS, load_model
    from .deviation import synthetic_model

    if spec == "synthetic" or (spec is None and not os.environ.get("IVFUSION_WEIGHTS")
                               and not (DEFAULT_WEIGHTS / "model.safetensors").is_file()):
        return synthetic_model(0)
    return load_model(spec)


def _param_counts(model) -> dict:
    from ..config import ISFuseConfig
    from ..modeling import ISFuse

    full = ISFuse(ISFuseConfig(**{**model.config.to_dict(), "with_unused": True}))
    return {"used": model.num_parameters(used_only=True), "with_unused": full.num_parameters(used_only=False)}


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

    data = shared_dir() / "data" / "msrs" / "train"
    try:
        vis, ir = (torch.from_numpy(a)[None, None] for a in load_pair(data / "ir" / "00001D.png", data / "vi" / "00001D.png"))
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
    from ..fast import build_fast
    from .deviation import ChannelsLast, fold_bn_model

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


INTERVENTION_RUNS = ("complementary", "random", "drop-visible", "drop-infrared")


def time_intervene(model, device, vis_y, ir, runs: int, warmup: int) -> dict:
    """The default Fuser's costs as ratios to its own forward pass, timed interleaved:
    "forward" (one network call on tensors), "set_pair" (a new pair: preparation, clean pass,
    result arrays) and a re-fuse with each intervention after set_pair ("intervene: NAME",
    seeds change per run). Returns {name: {"median_s", "cpu_median_s", "ratio", "cpu_ratio"}}."""
    from ..predictor import Fuser

    fuser = Fuser(model, device=device, max_side=None)
    visible, infrared = vis_y[0, 0].float().cpu().numpy(), ir[0, 0].float().cpu().numpy()
    x, y = vis_y[:1], ir[:1]

    def set_pair():
        fuser.reset()
        fuser.set_pair(visible, infrared)

    steps = {"forward": lambda r: fuser.run(x, y), "set_pair": lambda r: set_pair()}
    for name in INTERVENTION_RUNS:
        steps[f"intervene: {name}"] = lambda r, name=name: fuser.intervene(name, seed=r)
    times = {n: {"wall": [], "cpu": []} for n in steps}
    fuser.set_pair(visible, infrared)
    for r in range(warmup + runs):
        for n, step in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step(r)
            _sync(device)
            if r >= warmup:
                times[n]["wall"].append(time.perf_counter() - t0)
                times[n]["cpu"].append(time.process_time() - c0)
    fw = statistics.median(times["forward"]["wall"])
    fw_cpu = statistics.median(times["forward"]["cpu"])
    out = {"path": fuser.path}
    for n, t in times.items():
        med, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
        out[n] = {"median_s": med, "cpu_median_s": cpu, "ratio": med / fw, "cpu_ratio": cpu / fw_cpu if fw_cpu > 0 else None}
    return out


def _p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def run_bench(args) -> dict:
    from ..device import resolve_device
    from ..device import bf16_native
    from ..fast import BOUND, resolve_path
    from ..hub import describe
    from .deviation import max_deviation, pair_tensors

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    model = _load(args.weights).to(device).eval()
    if args.paths:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    else:
        paths = ["reference", "fast"] + (["fast-bf16"] if device.type == "cuda" or bf16_native() else [])
    if "reference" not in paths:
        paths.insert(0, "reference")
    nets = _nets(model, device, paths, args.ablation)
    report = {
        "weights": describe(model),
        "device": str(device),
        "cpu": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
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
    for height, width in args.sizes:  # parsed by paths.parse_sizes
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
        if args.intervene:
            entry["fuser"] = time_intervene(model, device, vis_y, ir, args.runs, args.warmup)
        report["sizes"].append(entry)
    # deviation on real pairs at their native sizes
    folders = args.pairs or [str(shared_dir() / "data" / "roadscene" / "test"), str(shared_dir() / "data" / "msrs" / "train")]
    pairs = []
    for folder in folders:
        if Path(folder, "ir").is_dir():
            pairs += pair_tensors(folder, limit=args.max_pairs or None)
    pairs = [(n, v.to(device), i.to(device)) for n, v, i in pairs]
    report["real_pairs"] = {"folders": folders, "count": len(pairs),
                            "sizes": sorted({f"{v.shape[-1]}x{v.shape[-2]}" for _, v, _ in pairs}),
                            "max_dev": {name: max_deviation(model, net, pairs) for name, net in nets.items() if name != "reference"}}
    if args.metrics_repeats > 0:
        from .metrics_time import time_metrics

        try:
            report["metrics_time_s"] = time_metrics(repeats=args.metrics_repeats, shared_dir=shared_dir())
        except Exception as e:  # no shared data: say so, do not fail the benchmark
            report["metrics_time_s"] = {"error": f"{type(e).__name__}: {e}"}
    report["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


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
        fz = e.get("fuser")
        if fz:
            lines.append(f"  Fuser (path {fz['path']}), as ratios to its own forward pass (wall; cpu): a new pair = set_pair, "
                         f"a re-fuse = intervene after set_pair")
            for name, t in fz.items():
                if name != "path":
                    lines.append(f"    {name:30s} {t['median_s'] * 1e3:7.0f}ms {t['ratio']:6.2f}x; cpu {(t['cpu_ratio'] or 0):5.2f}x")
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


