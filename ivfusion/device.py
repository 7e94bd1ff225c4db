"""Where tensors run: the one device resolver, shared by training and inference."""
from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

import torch


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def check_device_name(name: str) -> str:
    """`name` if it is one of DEVICE_NAMES, else ValueError saying what is accepted."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise ValueError(f"device {str(name)!r} is unknown; accepted: {DEVICE_NAMES}")
    return str(name)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is CUDA when available, else CPU. ValueError (one line, for the command lines) for
    a name outside DEVICE_NAMES and for a CUDA request without CUDA."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(check_device_name(str(device)))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but this torch build sees no CUDA GPU; "
                         "use 'cpu' or 'auto'")
    return device


@functools.lru_cache(maxsize=None)
def bf16_native() -> bool:
    """True where this CPU runs bf16 convolutions natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_name() -> str:
    """The CPU's model name, for benchmark and timing lines (the machines change)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
