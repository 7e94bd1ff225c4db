"""The authors' checkpoint layout, for tests: a synthetic state dict with every key and shape of
`../shared/paper/official-checkpoint-keys.txt`, and a functional forward written against those
keys straight from METHOD.md (independent of ivfusion.modeling)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F


def keys_file() -> Path:
    from tests.helpers import SHARED

    return SHARED / "paper" / "official-checkpoint-keys.txt"


def official_keys() -> list[tuple[str, str, tuple[int, ...]]]:
    rows = []
    for line in keys_file().read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, dtype, shape = line.split("\t")
        rows.append((key, dtype, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


def synthetic_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values of the right shapes; BN statistics random too, so that they matter."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, dtype, shape in official_keys():
        if dtype == "int64":
            sd[key] = torch.tensor(100, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith(".weight") and len(shape) == 1:  # BN gamma
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return sd


def _cba(sd, p, x, conv="0", bn="1", k=3):
    x = F.conv2d(x, sd[f"{p}.{conv}.weight"], sd[f"{p}.{conv}.bias"], padding=k // 2)
    x = F.batch_norm(x, sd[f"{p}.{bn}.running_mean"], sd[f"{p}.{bn}.running_var"],
                     sd[f"{p}.{bn}.weight"], sd[f"{p}.{bn}.bias"], False, 0.0, 1e-5)
    return F.leaky_relu(x, 0.01)


def _double(sd, p, x):
    return _cba(sd, p, _cba(sd, p, x, "0", "1"), "3", "4")


def _encoder(sd, p, x):
    f1 = _double(sd, f"{p}.module1", x)
    f2 = _double(sd, f"{p}.module2", F.max_pool2d(f1, 2))
    f3 = _double(sd, f"{p}.module3", F.max_pool2d(f2, 2))
    return f1, f2, f3


def _attend(q, k, v, r=8):
    b, c, h, w = q.shape
    k = F.adaptive_avg_pool2d(k, r).reshape(b, c, r * r)
    v = F.adaptive_avg_pool2d(v, r).reshape(b, c, r * r)
    attn = torch.softmax(torch.einsum("bcn,bcm->bnm", q.reshape(b, c, h * w), k) / math.sqrt(c), -1)
    return torch.einsum("bnm,bcm->bcn", attn, v).reshape(b, c, h, w)


def _conv1(sd, name, x):
    return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _cfi(sd, p, fv, fi):
    cross = _attend(_conv1(sd, f"{p}.q_v", fv), _conv1(sd, f"{p}.k_i", fi), _conv1(sd, f"{p}.v_i", fi)) + _attend(
        _conv1(sd, f"{p}.q_i", fi), _conv1(sd, f"{p}.k_v", fv), _conv1(sd, f"{p}.v_v", fv))
    g = torch.sigmoid(_conv1(sd, f"{p}.gate.3", _cba(sd, f"{p}.gate", cross)))
    return _cba(sd, f"{p}.refine", g * cross + (1 - g) * (fv + fi)), g


def authors_forward(sd, vis, ir):
    v1, v2, v3 = _encoder(sd, "encoder_vis", vis)
    i1, i2, i3 = _encoder(sd, "encoder_ir", ir)
    x3, g3 = _cfi(sd, "cfi3", v3, i3)
    c4, g4 = _cfi(sd, "cfi4", v2, i2)
    x4 = _double(sd, "adjust_channels4", F.interpolate(x3, size=c4.shape[-2:], mode="bilinear", align_corners=False) + c4)
    c5, g5 = _cfi(sd, "cfi5", v1, i1)
    x5 = _double(sd, "adjust_channels5", F.interpolate(x4, size=c5.shape[-2:], mode="bilinear", align_corners=False) + c5)
    out = torch.sigmoid(F.conv2d(x5, sd["final_decoder.0.weight"], sd["final_decoder.0.bias"], padding=1))
    return out, (g3, g4, g5)
