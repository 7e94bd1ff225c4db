"""`ivfusion fuse` (files or folders of pairs) and `ivfusion info` (size and cost).

Folder mode keeps going past any pair that fails (unreadable, too large, too small, a size
mismatch, anything the network raises), then prints a summary naming each failed pair and
why, and exits 1. Every file is written to a temporary name and renamed, so a failure (a full
disk included) never leaves a partial PNG or npz.
"""
from __future__ import annotations

import io as _bytes_io
import sys
from pathlib import Path

import numpy as np

from . import io
from .cli_flags import (add_device_flag, add_modality_flags, failure_reason, missing_modality_flags, user_error,
                        whole_number)
from .interventions import INTERVENTIONS, get_intervention
from .shipped import ACCEPTED_SPECS
from .levels import GATE_LEVELS, npz_key
from .modeling.isfuse import MIN_SIDE
from .predictor import DEFAULT_MAX_SIDE


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fuse", help="fuse an infrared/visible pair, or folders of pairs matched by file name")
    add_modality_flags(p, "image file, or a folder of them (matched by file name without suffix)")
    p.add_argument("--out", required=True, help="output folder (or a .png file for a single pair)")
    p.add_argument("--weights", default=None,
                   help=f"weights spec: {ACCEPTED_SPECS} (default: the bundled weights, or $IVFUSION_WEIGHTS)")
    p.add_argument("--intervention", default="none", choices=tuple(INTERVENTIONS),
                   help="; ".join(f"{n}: {iv.label}" for n, iv in INTERVENTIONS.items()))
    p.add_argument("--seed", type=whole_number(0), default=0, help="seed of the intervention's masks (default 0)")
    p.add_argument("--save-gates", action="store_true",
                   help="also write <stem>_gates.npz: the gate maps at native size ("
                        + ", ".join(npz_key(lv) for lv in GATE_LEVELS) + ") and gates_full (3, H, W)")
    add_device_flag(p, "auto")
    p.add_argument("--max-side", type=_max_side, default=DEFAULT_MAX_SIDE, metavar="N",
                   help=f"downscale images whose longer side exceeds N; none: never (default {DEFAULT_MAX_SIDE})")
    p.add_argument("--resize-ir", action="store_true", help="resize an infrared image of another size to the visible size")
    p.add_argument("--path", default="auto",
                   help="inference path (ivfusion.fast.PATHS): auto (fp32 fast on CPUs, reference on CUDA), "
                        "reference (the modules that follow the authors' forward pass op by op), fast, fast-mixed "
                        "(bf16 CFIs and decoder, within 2/255; faster where bf16 is native) or fast-bf16")
    p.set_defaults(func=run_fuse)

    q = subparsers.add_parser("info", help="print the network's configuration, parameter count and MACs")
    q.add_argument("--weights", default="untrained", help="weights spec (default: the architecture alone)")
    q.add_argument("--size", type=whole_number(MIN_SIDE), nargs=2, default=(256, 256), metavar=("H", "W"),
                   help=f"image size for the MACs, each side at least {MIN_SIDE} (default 256 256)")
    q.set_defaults(func=run_info)


def _max_side(text: str) -> int | None:
    """--max-side: a side of at least MIN_SIDE, or 'none' (an explicit word, so that a 0 or a
    negative number is refused rather than silently turning downscaling off)."""
    if text.strip().lower() == "none":
        return None
    return whole_number(MIN_SIDE, why=" or 'none' (never downscale)")(text)


def _gates_bytes(result) -> bytes:
    buf = _bytes_io.BytesIO()
    np.savez_compressed(buf, **{npz_key(lv): result.gates[lv.index] for lv in GATE_LEVELS},
                        gates_full=result.gates_full)
    return buf.getvalue()


def _jobs(infrared: Path, visible: Path, out: Path):
    """(name, infrared, visible, output) jobs, and the `data.Pairs` they come from (which
    names the files found on one side only)."""
    from .data import Pairs, find_pairs

    if infrared.is_dir() != visible.is_dir():
        raise ValueError("--infrared and --visible must both be files or both be folders")
    if not infrared.is_dir():
        target = out if out.suffix.lower() == ".png" else out / f"{visible.stem}.png"
        return [(visible.stem, infrared, visible, target)], Pairs()
    pairs = find_pairs(infrared=infrared, visible=visible)
    return [(s, ir, vi, out / f"{s}.png") for s, ir, vi in pairs], pairs


def _fuse_one(fuser, args, kind: str, ir_path: Path, vis_path: Path, target: Path) -> list[str]:
    """Fuse one pair and write its files; returns the notices. Raises on any failure."""
    from .data import load_pair

    visible, infrared = load_pair(ir_path, vis_path, form="image", same_size=False)
    if visible.shape[:2] != infrared.shape[:2] and not args.resize_ir:
        (vh, vw), (ih, iw) = visible.shape[:2], infrared.shape[:2]
        raise io.ImageError(f"the infrared image is {iw}x{ih} but the visible image is {vw}x{vh}; a pair must be "
                            "registered (same size). Add --resize-ir to resize the infrared image to the visible size.")
    result = fuser.fuse(visible, infrared, kind, args.seed, resize_ir=args.resize_ir)
    target.parent.mkdir(parents=True, exist_ok=True)
    io.write_png(target, result.fused_rgb)  # atomic: a temporary name, then renamed
    if args.save_gates:
        io.atomic_write(target.with_name(f"{target.stem}_gates.npz"), _gates_bytes(result))
    return result.notices


def run_fuse(args) -> int:
    from tqdm import tqdm

    from .hub import WeightsError
    from .predictor import Fuser

    usage = missing_modality_flags(args)
    if usage:
        return user_error("fuse", usage)
    kind = get_intervention(args.intervention).name
    try:
        jobs, pairs = _jobs(Path(args.infrared), Path(args.visible), Path(args.out))
    except (FileNotFoundError, ValueError) as e:
        return user_error("fuse", e)
    lonely = pairs.unmatched()
    if lonely:
        print(pairs.unmatched_note(f"{args.infrared} and {args.visible}"), file=sys.stderr)
    try:
        fuser = Fuser(args.weights, device=args.device, max_side=args.max_side, path=args.path)
    except (WeightsError, RuntimeError, ValueError, OSError) as e:
        return user_error("fuse", e)
    print(f"weights: {fuser.weights_source}; device: {fuser.device}; path: {fuser.path}; intervention: {kind}")
    failed: dict[str, str] = {}
    for name, ir_path, vis_path, target in tqdm(jobs, disable=len(jobs) < 2, unit="pair"):
        try:
            for note in _fuse_one(fuser, args, kind, ir_path, vis_path, target):
                tqdm.write(f"{name}: {note}")
        except Exception as e:  # any per-pair failure: report it, go on with the next pair
            failed[name] = failure_reason(e)
            tqdm.write(f"failed {name}: {failed[name]}", file=sys.stderr)
    print(f"fused {len(jobs) - len(failed)} of {len(jobs)} pairs into {Path(args.out)}"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; {len(lonely)} unmatched file(s) skipped" if lonely else ""))
    if failed:
        print(f"\n{len(failed)} pair(s) failed and were not written:", file=sys.stderr)
        for name, why in failed.items():
            print(f"  {name}: {why}", file=sys.stderr)
    return 1 if failed else 0


def run_info(args) -> int:
    import torch

    from .bench import count_macs
    from .config import ISFuseConfig
    from .hub import WeightsError, describe, load_model
    from .modeling import ISFuse

    h, w = args.size
    if h * w > io.MAX_PIXELS:
        return user_error("info", f"--size {h} {w}: at most {io.MAX_PIXELS / 1e6:g} megapixels, the largest image "
                                  "ivfusion reads")
    try:
        model = load_model(args.weights)
    except (WeightsError, ValueError, OSError) as e:
        return user_error("info", e)
    with_unused = ISFuse(ISFuseConfig(**{**model.config.to_dict(), "with_unused": True}))
    print(f"weights: {describe(model)}")
    print(f"config: {model.config.to_dict()}")
    print(f"parameters (with the reference's 3 unused modules): {with_unused.num_parameters(used_only=False):,}")
    print(f"parameters (forward path): {model.num_parameters():,}")
    # counted on the meta device: shapes only, so a large size costs no memory and no time
    x = torch.zeros(1, 1, h, w, device="meta")
    print(f"MACs at {h}x{w}: {count_macs(ISFuse(model.config).to('meta'), x, x) / 1e9:.3f} G")
    return 0
