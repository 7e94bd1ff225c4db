"""The one configuration of the ISFuse network, with the paper's defaults."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


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
    """

    dim: int = 32
    r: int = 8
    eta: float = 0.3
    gate_dim: int = 16
    shared_encoder: bool = False
    with_unused: bool = False
    negative_slope: float = 0.01

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ISFuseConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ISFuseConfig fields {unknown}; accepted: {sorted(names)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
