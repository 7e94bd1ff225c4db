"""The one configuration of the ISFuse network, with the paper's defaults."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# Accepted ranges, checked before any module is built: a config.json is user input, and
# {"dim": 20000} would otherwise try a 14 GB allocation. The upper ends are generous multiples
# of the paper's values (dim 32, r 8, gate_dim 16), far from memory trouble at 0.23M x 16
# parameters; the lower ends are what the modules need to exist.
BOUNDS = {
    "dim": (1, 128),
    "r": (1, 32),
    "gate_dim": (1, 128),
}


@dataclass(frozen=True)
class ISFuseConfig:
    """Architecture hyper-parameters of ISFuse (METHOD.md, supplementary Sec. 3).

    dim: channels of every encoder, CFI and decoder feature map (32).
    r: side of the fixed r x r grid that the CFI's keys and values are average-pooled to;
        the attention therefore sees r*r tokens whatever the image size (8, the paper's best).
    eta: target mean activation of the invariance gates, used by the gate regulariser of
        L_inv (0.3). It does not change the forward pass; it lives here so that a checkpoint
        records the value it was trained with.
    shared_encoder: one encoder for both modalities, as the supplementary's "Siamese encoder"
        words it. The released checkpoint has two encoders of the same design, so False.
    with_unused: also build the three modules that the released checkpoint holds but its
        forward pass never calls (adjust_channels3, module4, module5), so that a parameter
        count matches the paper's 0.23M. They stay out of every computation.

    Every value is checked on construction (ValueError naming the field and its range): dim,
    r and gate_dim integers within BOUNDS, eta in (0, 1), negative_slope in [0, 1).
    """

    dim: int = 32
    r: int = 8
    eta: float = 0.3
    gate_dim: int = 16
    shared_encoder: bool = False
    with_unused: bool = False
    negative_slope: float = 0.01

    def __post_init__(self):
        for name, (lo, hi) in BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"ISFuseConfig.{name} must be an integer in [{lo}, {hi}], got {value!r}")
        for name in ("shared_encoder", "with_unused"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ISFuseConfig.{name} must be true or false, got {getattr(self, name)!r}")
        for name, lo, hi, closed in (("eta", 0.0, 1.0, False), ("negative_slope", 0.0, 1.0, True)):
            value = getattr(self, name)
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (lo <= value < hi if closed else lo < value < hi))
            if not ok:
                interval = f"[{lo:g}, {hi:g})" if closed else f"({lo:g}, {hi:g})"
                raise ValueError(f"ISFuseConfig.{name} must be a finite number in {interval}, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ISFuseConfig":
        """Build from a dict (config.json); ValueError names unknown fields or bad values."""
        if not isinstance(d, dict):
            raise ValueError(f"an ISFuseConfig must be a JSON object of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ISFuseConfig fields {unknown}; accepted: {sorted(names)}")
        return cls(**d)
