"""`ivfusion fuse` (files or folders of pairs) and `ivfusion info` (size and cost)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import io
from .interventions import KINDS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fuse", help="fuse an infrared/visible pair, or folders of pairs matched by file stem")
    p.add_argument("--ir", required=True, help="infrared image file, or a folder of them")
    p.add_argument("--vis", required=True, help="visible image file, or a folder of them")
    p.add_argument("--out", required=True, help="output folder (or a .png file for a single pair)")
    p.add_argument("--weights", default=None,
                   help="weights spec: a folder, .safetensors, the authors' .pth, hf://owner/repo[/file], "
                        "or 'untrained' (default: the bundled weights, or $IVFUSION_WEIGHTS)")
    p.add_argument("--intervention", default="none", choices=KINDS)
    p.add_argument("--seed", type=int, default=0, help="seed of the intervention's masks")
    p.add_argument("--save-gates", action="store_true", help="also write <stem>_gates.npz (gate maps)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-side", type=int, default=2048, help="downscale images whose longer side exceeds this")
    p.add_argument("--resize-ir", action="store_true", help="resize an infrared image of another size to the visible size")
    p.add_argument("--path", default="auto",
                   help="inference path (ivfusion.fast.PATHS): auto (the fastest within 2/255 of the reference on "
                        "this device), reference (the modules that follow the authors' forward pass op by op), "
                        "fast or fast-bf16")
    p.set_defaults(func=run_fuse)

    q = subparsers.add_parser("info", help="print the network's configuration, parameter count and MACs")
    q.add_argument("--weights", default="untrained", help="weights spec (default: the architecture alone)")
    q.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    q.set_defaults(func=run_info)


def _pairs(ir: Path, vis: Path, out: Path) -> tuple[list[tuple[str, Path, Path, Path]], list[str]]:
    """(name, ir, vis, output) jobs and the stems found on one side only."""
    if ir.is_dir() != vis.is_dir():
        raise SystemExit("--ir and --vis must both be files or both be folders")
    if not ir.is_dir():
        target = out if out.suffix.lower() == ".png" else out / f"{vis.stem}.png"
        return [(vis.stem, ir, vis, target)], []
    irs, viss = io.list_images(ir), io.list_images(vis)
    common = sorted(set(irs) & set(viss))
    lonely = [f"{s} (infrared only)" for s in sorted(set(irs) - set(viss))] + [
        f"{s} (visible only)" for s in sorted(set(viss) - set(irs))]
    return [(s, irs[s], viss[s], out / f"{s}.png") for s in common], lonely


def run_fuse(args) -> int:
    from tqdm import tqdm

    from .hub import WeightsError
    from .predictor import Fuser

    jobs, lonely = _pairs(Path(args.ir), Path(args.vis), Path(args.out))
    for item in lonely:
        print(f"skipped {item}: no matching file on the other side", file=sys.stderr)
    if not jobs:
        print("no pairs to fuse", file=sys.stderr)
        return 1
    try:
        fuser = Fuser(args.weights, device=args.device, max_side=args.max_side, path=args.path)
    except (WeightsError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"weights: {fuser.weights_source}; device: {fuser.device}; path: {fuser.path}; "
          f"intervention: {args.intervention}")
    failed = []
    for name, ir_path, vis_path, target in tqdm(jobs, disable=len(jobs) < 2, unit="pair"):
        try:
            result = fuser.fuse(io.read_image(vis_path), io.read_image(ir_path), args.intervention, args.seed,
                                resize_ir=args.resize_ir)
            target.parent.mkdir(parents=True, exist_ok=True)
            io.write_png(target, result.fused_rgb)
            if args.save_gates:
                np.savez_compressed(target.with_name(f"{target.stem}_gates.npz"),
                                    **{f"gate{k}": g for k, g in zip((3, 4, 5), result.gates)},
                                    gates_full=result.gates_full)
            for note in result.notices:
                tqdm.write(f"{name}: {note}")
        except (io.ImageError, OSError) as e:
            failed.append(name)
            tqdm.write(f"failed {name}: {e}", file=sys.stderr)
    print(f"fused {len(jobs) - len(failed)} of {len(jobs)} pairs into {Path(args.out)}"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; {len(lonely)} unmatched file(s) skipped" if lonely else ""))
    return 1 if failed else 0


def run_info(args) -> int:
    import torch

    from .bench import count_macs
    from .config import ISFuseConfig
    from .hub import describe, load_model
    from .modeling import ISFuse

    model = load_model(args.weights)
    h, w = args.size
    with_unused = ISFuse(ISFuseConfig(**{**model.config.to_dict(), "with_unused": True}))
    print(f"weights: {describe(model)}")
    print(f"config: {model.config.to_dict()}")
    print(f"parameters (with the reference's 3 unused modules): {with_unused.num_parameters(used_only=False):,}")
    print(f"parameters (forward path): {model.num_parameters():,}")
    x = torch.zeros(1, 1, h, w)
    print(f"MACs at {h}x{w}: {count_macs(model, x, x) / 1e9:.3f} G")
    return 0
