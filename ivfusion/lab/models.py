"""The models the Lab offers (`ModelBank`): trained default, the authors' checkpoint when
configured, the untrained network; each loaded once and shared by every session.

Environment variables (read by `ModelBank`):
  IVFUSION_WEIGHTS            weights spec of the default model (a folder, a .safetensors or
                              .pth file, or hf://owner/repo[/file]); if it cannot be loaded
                              the bundled weights are used, with a notice.
  IVFUSION_OFFICIAL_WEIGHTS   the authors' checkpoint (a path to best.pth or an hf:// spec);
                              when set, "Authors' checkpoint" is offered as a model.
  IVFUSION_MAX_SIDE           images whose longer side exceeds this are downscaled (default 1024).
"""
from __future__ import annotations

import os
import threading

from ..hub import DEFAULT_WEIGHTS, UNTRAINED, WeightsError, load_model
from ..predictor import Fuser

APP_MAX_SIDE = 1024

DEFAULT_CHOICE = "ISFuse, trained weights (default)"
OFFICIAL_CHOICE = "Authors' checkpoint (best.pth)"
UNTRAINED_CHOICE = "Untrained network (teaching contrast)"


def make_fuser(spec: str | os.PathLike | None = None, device: str = "auto", max_side: int | None = APP_MAX_SIDE,
               fast: bool = True) -> Fuser:
    """A Fuser for a weights spec (see `ivfusion.load_model`), on the fastest path that holds
    the deviation bound (`ivfusion.fast`), or on the reference path when fast=False."""
    return Fuser(load_model(spec), device=device, max_side=max_side, path="auto" if fast else "reference")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within `timeout` seconds (True
    when HF_HUB_OFFLINE is set: then only the local cache is used, which is fast). Saves the
    Hub client's half a minute of retries on a machine without network."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


class ModelBank:
    """The models the lab offers, each loaded at most once (thread-safe) and then shared.

    Models are read-only at inference, so one instance serves every user; no per-user state
    lives here. `env` defaults to os.environ (see the module docstring for the variables).
    """

    def __init__(self, env: dict[str, str] | None = None, device: str = "auto",
                 max_side: int | None = None, fast: bool = True):
        env = dict(os.environ if env is None else env)
        self.device = device
        self.fast = fast
        self.max_side = max_side if max_side is not None else int(env.get("IVFUSION_MAX_SIDE") or APP_MAX_SIDE)
        self.trained_spec = env.get("IVFUSION_WEIGHTS") or None
        self.official_spec = env.get("IVFUSION_OFFICIAL_WEIGHTS") or None
        self._fusers: dict[str, Fuser] = {}
        self._notes: dict[str, list[str]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def choices(self) -> list[str]:
        out = [DEFAULT_CHOICE]
        if self.official_spec:
            out.append(OFFICIAL_CHOICE)
        return out + [UNTRAINED_CHOICE]

    def _load(self, choice: str) -> tuple[Fuser, list[str]]:
        notes: list[str] = []
        if choice == DEFAULT_CHOICE:
            fuser = None
            if self.trained_spec:
                try:
                    if str(self.trained_spec).startswith("hf://") and not hub_reachable():
                        raise WeightsError("the Hugging Face Hub cannot be reached (offline?); set HF_HUB_OFFLINE=1 "
                                           "to use a copy in the local Hub cache")
                    fuser = make_fuser(self.trained_spec, self.device, self.max_side, self.fast)
                except WeightsError as e:
                    notes.append(f"IVFUSION_WEIGHTS={self.trained_spec} could not be loaded ({e}); "
                                 "using the bundled weights instead.")
            if fuser is None:
                fuser = make_fuser(DEFAULT_WEIGHTS, self.device, self.max_side, self.fast)
        elif choice == OFFICIAL_CHOICE:
            if not self.official_spec:
                raise WeightsError("the authors' checkpoint is not configured: set IVFUSION_OFFICIAL_WEIGHTS "
                                   "to the path of best.pth or to an hf://owner/repo/file spec")
            fuser = make_fuser(self.official_spec, self.device, self.max_side, self.fast)
        elif choice == UNTRAINED_CHOICE:
            fuser = make_fuser(UNTRAINED, self.device, self.max_side, self.fast)
            notes.append("The untrained network has random weights: its output and gates mean nothing. "
                         "Compare it with the trained model to see what training taught the gates.")
        else:
            raise WeightsError(f"unknown model {choice!r}; choose one of: {', '.join(self.choices())}")
        return fuser, notes

    def get(self, choice: str | None = None) -> tuple[Fuser, list[str]]:
        """The Fuser for a model choice (None: the default) and notices about it. Raises
        WeightsError with a readable message when it cannot be loaded."""
        choice = choice or DEFAULT_CHOICE
        with self._lock:
            if choice in self._fusers:
                return self._fusers[choice], list(self._notes[choice])
            if choice in self._errors:
                raise WeightsError(self._errors[choice])
            try:
                fuser, notes = self._load(choice)
            except WeightsError as e:
                if not (choice == DEFAULT_CHOICE and self.trained_spec):
                    self._errors[choice] = str(e)  # a missing file stays missing; Hub errors may be retried
                raise
            self._fusers[choice] = fuser
            self._notes[choice] = notes
            return fuser, list(notes)

    def default_choice(self) -> tuple[str, list[str]]:
        """Load the default model now (at startup) and return the choice to preselect: the
        trained default, or the untrained network with a notice when no trained weights load."""
        try:
            _, notes = self.get(DEFAULT_CHOICE)
            return DEFAULT_CHOICE, notes
        except WeightsError as e:
            self.get(UNTRAINED_CHOICE)
            return UNTRAINED_CHOICE, [f"No trained weights could be loaded ({e}). The lab runs the untrained "
                                      "network until trained weights are available."]

    def describe(self, choice: str | None = None) -> str:
        fuser, _ = self.get(choice)
        return f"{choice or DEFAULT_CHOICE}: weights from {fuser.weights_source}, {fuser.path} path, {fuser.device}"
