"""Helpers used only by the tests (the package keeps what the benchmark needs: ivfusion.bench)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch


# The shared folder (paper notes, data, the authors' checkpoint): $IVFUSION_SHARED, else
# <repo>/../shared. The one place the tests read it from.
SHARED = Path(os.environ.get("IVFUSION_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


@contextlib.contextmanager
def encoder_calls(net):
    """Record the input shape (H, W) of every call of net.encoder_vi and net.encoder_ir:
    yields {"vi": [...], "ir": [...]}."""
    seen = {"vi": [], "ir": []}
    hooks = [getattr(net, f"encoder_{m}").register_forward_hook(
        lambda mod, args, out, m=m: seen[m].append(tuple(args[0].shape[-2:]))) for m in ("vi", "ir")]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def plain_forward(model, visible_y: np.ndarray, infrared: np.ndarray):
    """The reference module's full forward on (H, W) float32 inputs: (fused (H, W), gates
    [(h, w)] coarsest first), numpy float32."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
    with torch.inference_mode():
        fused, gates = model(t(visible_y), t(infrared))
    return fused[0, 0].numpy(), [g[0, 0].numpy() for g in gates]


def wait_until(condition, what: str, timeout: float = 60.0, every: float = 0.005) -> None:
    """Wait for `condition()` to be true, at most `timeout` seconds; fails naming `what` then.

    For states another thread or process reaches (a request queued for the compute slot, a
    file written): the bound only turns a hang into a failure, no test result depends on it.
    """
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}", pytrace=False)
        time.sleep(every)


class SlotPlace:
    """A place the test takes in a compute slot's queue: a thread that holds the slot as
    "test" from when its turn comes (`holding` is set) until `release()`. With these places
    a test pauses a stability run at a known step, instead of hoping that a request arrives
    while the run is still going."""

    def __init__(self, slot):
        import threading

        self.holding, self._go = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(slot,), daemon=True)
        self._thread.start()

    def _hold(self, slot) -> None:
        with slot.hold("test"):
            self.holding.set()
            self._go.wait(600)

    def release(self) -> None:
        self._go.set()
        self._thread.join(60)
