"""TrainConfig: every training setting in one dataclass, and its command line.

Nested settings are flags with a dotted prefix: `--model.r 8`, `--masks.mask-size 16`,
`--masks.style disjoint`.
Precedence: defaults < the saved config of the run being resumed < --config file < flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ISFuseConfig
from ..device import DEVICE_NAMES, check_device_name
from ..interventions import MASK_STYLES, MaskConfig
from ..losses import NECESSITY_VARIANTS, REGULARISERS
from .augment import AugmentConfig

LR_SCHEDULES = ("constant", "cosine")
PASSES = ("separate", "pooled")


class ConfigError(ValueError):
    """A setting the user can fix; the command line prints it as one line."""


@dataclass
class TrainConfig:
    """Every training setting. The defaults are the authors' released recipe (their Train.py):
    five separate train-mode forwards, their mask sampler, 256x256 crops, Adam at a constant
    1e-4, batch 16, about their 3.4k steps (50 epochs of ~1.1k pairs)."""

    data: list[str] = field(default_factory=lambda: ["../shared/data/roadscene/train", "../shared/data/msrs/train"])
    # validation folders ("none": no validation); a training folder is validated on its held-out
    # pairs only, so that validation never scores a pair the run trains on
    val: list[str] = field(default_factory=lambda: ["../shared/data/roadscene/test"])
    out: str = "runs/isfuse"
    init: str | None = None  # weights spec to start from (fine-tuning); None = random init
    model: ISFuseConfig = field(default_factory=ISFuseConfig)  # the network, and eta
    masks: MaskConfig = field(default_factory=MaskConfig)
    # what each batch holds and how its crops are altered (night quota, exposure, zoom); all off
    # in the authors' recipe, see ivfusion/train/augment.py
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # False: the control of issue 24, the same network and data trained on L_f of the clean pass
    # alone (one forward per sample; no interventions, no L_inv, no L_nec, no gate regulariser)
    interventions: bool = True
    # the objective (supplementary Algorithm 1): L = L_f + alpha L_inv + beta L_nec
    alpha: float = 0.1  # weight of L_inv
    beta: float = 0.05  # weight of L_nec
    lambda1: float = 1.0  # weight of the Laplacian term inside L_f
    necessity: str = "reference"  # or "contribution", see losses.necessity_loss
    regulariser: str = "aggregated"  # R on the mean gate (authors) or "per-level"
    # "separate": five train-mode forwards, each BatchNorm normalising one variant (authors);
    # "pooled": one forward of the five variants stacked (BN statistics shared; faster)
    passes: str = "separate"
    # optimisation
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine" (decays to lr/10 after `warmup` steps)
    warmup: int = 0
    batch_size: int = 16  # global, split over the processes
    crop: int = 256  # pairs smaller than this are left out (with a notice)
    steps: int = 3400
    # DataLoader worker processes; 0 loads in the main process, the fastest on a 2-core CPU
    # (a batch of 16 crops and masks takes about 10 ms to make)
    workers: int = 0
    # bookkeeping
    val_every: int = 200
    val_pairs: int = 10
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    # bf16 autocast; None: on where bf16 is native (CUDA, or a CPU with AVX512-BF16 or AMX,
    # where a step at crop 128, batch 16 is about 3x faster: `ivfusion bench --train`), off elsewhere
    amp: bool | None = None
    threads: int = 0  # torch CPU threads, 0 = torch's default
    resume: bool = False
    # pair names (file stems) left out of training, to hold them out for evaluation
    holdout: list[str] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ISFuseConfig.from_dict(self.model)
        if isinstance(self.masks, dict):
            self.masks = MaskConfig(**self.masks)
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.val is None or (isinstance(self.val, str) and self.val.lower() == "none"):
            self.val = []
        elif isinstance(self.val, str):  # configs written before validation took several folders
            self.val = [self.val]
        self.check()

    def check(self) -> None:
        """Raise ConfigError naming the first setting out of range."""
        def need(ok, msg):
            if not ok:
                raise ConfigError(msg)

        need(isinstance(self.data, list) and self.data and all(isinstance(d, str) and d for d in self.data),
             f"--data: give at least one folder holding ir/ and vi/, got {self.data!r}")
        need(isinstance(self.holdout, list) and all(isinstance(s, str) for s in self.holdout),
             f"--holdout: give pair names (file stems), got {self.holdout!r}")
        need(isinstance(self.val, list) and all(isinstance(v, str) for v in self.val),
             f"--val: give folders holding ir/ and vi/, or 'none' for no validation, got {self.val!r}")
        need(all(v.strip() for v in self.val), "--val: empty; give folders holding ir/ and vi/, or 'none' for no validation")
        need(self.crop >= 16 and self.crop % 4 == 0, f"--crop must be a multiple of 4 and >= 16, got {self.crop}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        for name in ("val_every", "val_pairs", "log_every"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a finite number > 0, got {self.lr}")
        need(self.warmup >= 0 and self.workers >= 0 and self.threads >= 0, "--warmup, --workers and --threads must be >= 0")
        need(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        try:
            check_device_name(self.device)
        except ValueError as e:
            raise ConfigError(f"--device: {e}") from None
        need(self.lr_schedule in LR_SCHEDULES, f"--lr-schedule {self.lr_schedule!r} is unknown; accepted: {', '.join(LR_SCHEDULES)}")
        need(self.passes in PASSES, f"--passes {self.passes!r} is unknown; accepted: {', '.join(PASSES)}")
        need(self.regulariser in REGULARISERS, f"--regulariser {self.regulariser!r} is unknown; accepted: {', '.join(REGULARISERS)}")
        need(self.necessity in NECESSITY_VARIANTS, f"--necessity {self.necessity!r} is unknown; accepted: {', '.join(NECESSITY_VARIANTS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- the command line ----------------------------------------------------------------------
# Written out like every other subcommand's. Each flag's default stays None, so that a resumed
# run's saved config and a --config file can fill what the command line leaves unset
# (config_from_args); the help shows TrainConfig's value.
_NESTED = {"model": ISFuseConfig, "masks": MaskConfig, "augment": AugmentConfig}


def setting_names() -> list[str]:
    """Every setting's name, nested ones dotted ("model.r", "masks.style"): one flag each."""
    out = []
    for f in dataclasses.fields(TrainConfig):
        nested = _NESTED.get(f.name)
        out += [f"{f.name}.{g.name}" for g in dataclasses.fields(nested)] if nested else [f.name]
    return out


def _defaults() -> dict:
    """TrainConfig's defaults as plain values, nested settings as dicts."""
    values = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
              for f in dataclasses.fields(TrainConfig)}
    return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in values.items()}


def _number_or_none(kind):
    return lambda v: None if v.lower() == "none" else kind(v)


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = _defaults()

    def flag(group, name: str, help: str, shown=None, **kw) -> None:
        if shown is None:
            head, _, tail = name.partition(".")
            shown = defaults[head][tail] if tail else defaults[head]
        shown = " ".join(map(str, shown)) if isinstance(shown, list) else shown
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        elif shown in (None, ""):
            shown = "none"
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                           help=f"{help} (default {shown})", **kw)

    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of TrainConfig fields (flags override it)")
    g = p.add_argument_group("data and output")
    flag(g, "data", "training folders, each holding ir/ and vi/", nargs="+", metavar="DIR")
    flag(g, "val", "validation folders, or 'none'; a training folder is validated on its held-out pairs only",
         nargs="+", metavar="DIR")
    flag(g, "holdout", "pair names (file stems) left out of training", nargs="+", metavar="STEM")
    flag(g, "crop", "crop side; smaller pairs are left out", type=int, metavar="N")
    flag(g, "out", "run folder: checkpoints, log.jsonl, curves.png", metavar="DIR")
    flag(g, "init", "weights spec to start from (fine-tuning); unset: random init", metavar="SPEC")
    flag(g, "resume", "continue the run in --out from its last checkpoint; of its settings only "
         + ", ".join(map(_flag_name, RESUME_SAFE)) + " may change", action=argparse.BooleanOptionalAction)
    g = p.add_argument_group("the network (ISFuseConfig)")
    flag(g, "model.dim", "channels of every feature map", type=int, metavar="N")
    flag(g, "model.r", "side of the CFI's pooled key/value grid", type=int, metavar="N")
    flag(g, "model.eta", "target mean of the invariance gates", type=float, metavar="X")
    flag(g, "model.gate_dim", "hidden channels of the invariance gate's block", type=int, metavar="N")
    flag(g, "model.shared_encoder", "one encoder for both modalities", action=argparse.BooleanOptionalAction)
    flag(g, "model.with_unused", "also build the checkpoint's three unused modules", action=argparse.BooleanOptionalAction)
    flag(g, "model.negative_slope", "LeakyReLU slope", type=float, metavar="X")
    g = p.add_argument_group("the masks (MaskConfig)")
    flag(g, "masks.style", "mask sampler: " + " or ".join(MASK_STYLES), metavar="NAME")
    flag(g, "masks.mask_size", "hole side (a disk's diameter), pixels", type=int, metavar="N")
    flag(g, "masks.min_holes", "fewest holes per mask", type=int, metavar="N")
    flag(g, "masks.max_holes", "most holes per mask", type=int, metavar="N")
    flag(g, "masks.disk_prob", "probability that a hole is a disk; none: the style's own", type=_number_or_none(float),
         metavar="P")
    flag(g, "masks.max_fraction", "largest hidden fraction of an image", type=float, metavar="X")
    g = p.add_argument_group("what each batch holds and how its crops are altered (AugmentConfig)")
    flag(g, "augment.night_share", "share of every batch drawn from night pairs; 0: uniform over all pairs",
         type=float, metavar="X")
    flag(g, "augment.night_below", "a pair is night when its visible luminance mean (0-1) is below this",
         type=float, metavar="X")
    flag(g, "augment.photometric", "probability, per sample and modality, of a random gain and gamma",
         type=float, metavar="P")
    flag(g, "augment.darken", "probability that a daylight sample is made night-like (visible darkened with "
         "sensor noise, infrared rescaled)", type=float, metavar="P")
    flag(g, "augment.zoom", "random-resized crops: largest region side as a multiple of the crop; 1: plain crops",
         type=float, metavar="X")
    flag(g, "augment.flat_below", "redraw a crop whose two modalities both have a std below this; 0: off",
         type=float, metavar="X")
    g = p.add_argument_group("the objective: L = L_f + alpha L_inv + beta L_nec")
    flag(g, "interventions", "train under the three interventions (Algorithm 1); --no-interventions: the "
         "control, L_f on the clean pass alone", action=argparse.BooleanOptionalAction)
    flag(g, "alpha", "weight of L_inv", type=float, metavar="X")
    flag(g, "beta", "weight of L_nec", type=float, metavar="X")
    flag(g, "lambda1", "weight of the Laplacian term inside L_f", type=float, metavar="X")
    flag(g, "necessity", "form of L_nec: " + " or ".join(NECESSITY_VARIANTS), metavar="NAME")
    flag(g, "regulariser", "gate regulariser of L_inv: " + ", ".join(REGULARISERS), metavar="NAME")
    flag(g, "passes", "separate: a train-mode forward per variant; pooled: one forward of all five", metavar="NAME")
    g = p.add_argument_group("optimisation")
    flag(g, "lr", "Adam learning rate", type=float, metavar="X")
    flag(g, "lr_schedule", "learning-rate schedule: constant, or cosine down to lr/10 after the warm-up",
         metavar="NAME")
    flag(g, "warmup", "linear warm-up steps", type=int, metavar="N")
    flag(g, "batch_size", "global batch, split over the processes", type=int, metavar="N")
    flag(g, "steps", "optimiser steps", type=int, metavar="N")
    flag(g, "seed", "fixes the initialisation, every crop and every mask", type=int, metavar="N")
    g = p.add_argument_group("machine and bookkeeping")
    flag(g, "device", "device to run on: " + DEVICE_NAMES, metavar="NAME")
    flag(g, "amp", "bf16 autocast", shown="on where bf16 is native", action=argparse.BooleanOptionalAction)
    flag(g, "threads", "torch CPU threads; 0: torch's default", type=int, metavar="N")
    flag(g, "workers", "DataLoader worker processes; 0: the main process", type=int, metavar="N")
    flag(g, "val_every", "steps between validations", type=int, metavar="N")
    flag(g, "val_pairs", "validation pairs", type=int, metavar="N")
    flag(g, "log_every", "steps between log records", type=int, metavar="N")


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, v in flat.items():
        head, _, tail = key.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = v
        else:
            out[key] = v
    return out


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def config_from_args(args) -> TrainConfig:
    """Defaults < saved config of the resumed run < --config file < flags. With --resume, the
    interrupted run's saved config takes the place of the defaults, so `--out DIR --resume`
    alone continues that run; a --config file or flag that changes one of its settings other
    than RESUME_SAFE is a ConfigError naming it (saved vs asked)."""
    values = _defaults()
    saved = Path(getattr(args, "out", None) or TrainConfig.out) / "train_config.json"
    resumed = bool(getattr(args, "resume", None) and saved.is_file())
    if resumed:
        try:
            _merge(values, json.loads(saved.read_text()))
        except (OSError, ValueError, AttributeError) as e:  # AttributeError: JSON but not a mapping
            raise ConfigError(f"--resume: {saved} is not a readable saved config ({e}); restore it, or start "
                              "a new run in another --out") from None
    asked: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        _merge(asked, _nest(_read_config_file(path)))
    flags = {name: getattr(args, name) for name in setting_names() if getattr(args, name, None) is not None}
    _merge(asked, _nest(flags))
    if resumed:
        _refuse_changes(values, asked, saved)
    _merge(values, asked)
    values["val"] = _val_folders(values.get("val"))
    _check_fields(values)
    try:
        return TrainConfig(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # range checks of ISFuseConfig / MaskConfig
        raise ConfigError(str(e)) from None


# What a resumed run may change: how long it runs (a cosine schedule stretches to the new
# --steps) and the machine it runs on. Everything else defines the run (its data, crops, masks,
# network, objective, optimiser and validation) and stays as saved.
RESUME_SAFE = ("steps", "threads", "workers", "device", "amp", "val_every", "log_every")


def _flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _refuse_changes(saved: dict, asked: dict, path: Path, prefix: str = "") -> None:
    """ConfigError for the first asked setting that differs from the resumed run's."""
    for key, value in asked.items():
        name, was = prefix + key, saved.get(key)
        if isinstance(value, dict) and isinstance(was, dict):
            _refuse_changes(was, value, path, name + ".")
        elif name in RESUME_SAFE or name in ("out", "resume") or value == was:  # a run folder may move
            continue
        elif not (name == "val" and _val_folders(value) == _val_folders(was)):
            raise ConfigError(f"--resume: {_flag_name(name)} is {json.dumps(was)} in the run being resumed ({path}), "
                              f"asked {json.dumps(value)}; a resumed run may change only "
                              f"{', '.join(map(_flag_name, RESUME_SAFE))}; start a new run in another --out "
                              "to change the rest")


def _val_folders(val) -> list:
    """--val as a list of folders: 'none' (alone, any case) or None is no validation, and a single
    folder written as a string (configs before several folders) is a list of one."""
    if val is None:
        return []
    val = [val] if isinstance(val, str) else val
    return [] if isinstance(val, list) and len(val) == 1 and str(val[0]).lower() == "none" else val


def _read_config_file(path: Path) -> dict:
    """A --config file's settings; anything but a YAML or JSON mapping is a ConfigError."""
    kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
    try:
        text = path.read_text()
        if kind == "YAML":
            import yaml

            loaded = yaml.safe_load(text)
            loaded = {} if loaded is None else loaded
        else:
            loaded = json.loads(text)
    except Exception as e:  # noqa: BLE001 - OSError, decoding, JSON's and yaml's own errors
        raise ConfigError(f"--config {path}: not readable {kind} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings (name: value), got a {type(loaded).__name__}")
    for key in _NESTED:
        if key in loaded and not isinstance(loaded[key], dict):
            raise ConfigError(f"--config {path}: '{key}' must be a mapping of its settings, got {loaded[key]!r}")
    return loaded


def _check_fields(values: dict) -> None:
    for cls, d, where in [(TrainConfig, values, "")] + [(c, values.get(k, {}), k + ".") for k, c in _NESTED.items()]:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names) if isinstance(d, dict) else []
        if unknown:
            raise ConfigError(f"unknown settings {[where + u for u in unknown]}; accepted: {sorted(names)}")
