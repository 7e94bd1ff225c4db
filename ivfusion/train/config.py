"""TrainConfig: every training setting in one dataclass, and the command line built from it.

Nested settings are flags with a dotted prefix: `--model.r 8`, `--masks.mask-size 16`,
`--masks.style disjoint`.
Precedence: defaults < the saved config of the run being resumed < --config file < flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ISFuseConfig
from ..interventions import MaskConfig
from ..losses import NECESSITY_VARIANTS, REGULARISERS

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
    val: str | None = "../shared/data/roadscene/test"  # a folder, or "none" for no validation
    out: str = "runs/isfuse"
    init: str | None = None  # weights spec to start from (fine-tuning); None = random init
    model: ISFuseConfig = field(default_factory=ISFuseConfig)  # the network, and eta
    masks: MaskConfig = field(default_factory=MaskConfig)
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
        self.check()

    def check(self) -> None:
        """Raise ConfigError naming the first setting out of range."""
        def need(ok, msg):
            if not ok:
                raise ConfigError(msg)

        need(isinstance(self.data, list) and self.data and all(self.data), "--data: give at least one folder holding ir/ and vi/")
        need(self.val is None or str(self.val).strip() != "", "--val: empty; give a folder holding ir/ and vi/, or 'none' for no validation")
        need(self.crop >= 16 and self.crop % 4 == 0, f"--crop must be a multiple of 4 and >= 16, got {self.crop}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        for name in ("val_every", "val_pairs", "log_every"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a finite number > 0, got {self.lr}")
        need(self.warmup >= 0 and self.workers >= 0 and self.threads >= 0, "--warmup, --workers and --threads must be >= 0")
        need(self.lr_schedule in LR_SCHEDULES, f"--lr-schedule {self.lr_schedule!r} is unknown; accepted: {', '.join(LR_SCHEDULES)}")
        need(self.passes in PASSES, f"--passes {self.passes!r} is unknown; accepted: {', '.join(PASSES)}")
        need(self.regulariser in REGULARISERS, f"--regulariser {self.regulariser!r} is unknown; accepted: {', '.join(REGULARISERS)}")
        need(self.necessity in NECESSITY_VARIANTS, f"--necessity {self.necessity!r} is unknown; accepted: {', '.join(NECESSITY_VARIANTS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- the command line, built from the type hints ----------------------------------------
_NESTED = {"model": ISFuseConfig, "masks": MaskConfig}


def _leaves(cls, prefix=""):
    """(dotted name, type, default) for every setting, nested dataclasses flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in _NESTED and cls is TrainConfig:
            yield from _leaves(_NESTED[f.name], f.name + ".")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            yield prefix + f.name, hints[f.name], default


def _add(p, flag: str, dest: str, kind, default) -> None:
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    args = typing.get_args(kind) if union else ()
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if union else kind
    # the default shown, not set: unset flags must stay None, so that a resumed run's saved
    # config and a --config file can fill them (config_from_args)
    shown = " ".join(map(str, default)) if isinstance(default, list) else default
    text = f"default: {shown if shown not in (None, '') else 'none'}"
    if base is bool:
        p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif typing.get_origin(base) is list:
        p.add_argument(flag, dest=dest, nargs="+", default=None, help=text)
    else:
        conv = base if base in (int, float) else str
        if optional and conv is not str:  # "none" leaves a number unset (e.g. disk_prob)
            conv = (lambda c: lambda v: None if v.lower() == "none" else c(v))(conv)
        p.add_argument(flag, dest=dest, type=conv, default=None, help=text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON file of TrainConfig fields (flags override it)")
    for name, kind, default in _leaves(TrainConfig):
        _add(p, "--" + name.replace("_", "-"), name, kind, default)


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
    alone continues that run."""
    values = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
              for f in dataclasses.fields(TrainConfig)}
    values = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in values.items()}
    saved = Path(getattr(args, "out", None) or TrainConfig.out) / "train_config.json"
    if getattr(args, "resume", None) and saved.is_file():
        _merge(values, json.loads(saved.read_text()))
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        _merge(values, _nest(_read_config_file(path)))
    flags = {name: getattr(args, name) for name, _, _ in _leaves(TrainConfig) if getattr(args, name, None) is not None}
    _merge(values, _nest(flags))
    if isinstance(values.get("val"), str) and values["val"].lower() == "none":
        values["val"] = None
    _check_fields(values)
    try:
        return TrainConfig(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # range checks of ISFuseConfig / MaskConfig
        raise ConfigError(str(e)) from None


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
