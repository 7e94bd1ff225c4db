"""Loading and saving weights: bundled defaults, local files, the authors' checkpoint, the Hub.

`load_model(spec)` accepts:
  None                   the bundled default weights (DEFAULT_WEIGHTS, package data), or the
                         spec in the IVFUSION_WEIGHTS environment variable when it is set;
  a folder               holding model.safetensors and config.json (`save_pretrained` layout);
  a .safetensors file    its config from the sibling config.json (default config if absent);
  a .pth / .pt file      the authors' released checkpoint (best.pth), keys mapped to ours;
  hf://owner/repo[/file] a Hugging Face Hub repository (a file in it, or model.safetensors);
  "untrained"            a freshly initialised network (seeded), for teaching contrasts only.
"""
from __future__ import annotations

import os
import pickle
import re
from importlib import resources
from pathlib import Path

import torch

from .config import ISFuseConfig
from .modeling import ISFuse

UNTRAINED = "untrained"


def bundled_path(name: str = "") -> Path:
    """A file or folder shipped with the package, e.g. bundled_path("weights/isfuse-ivfusion").

    The repository keeps them in its top-level assets/ folder, which installs as the package
    data of `ivfusion.assets` (pyproject's package-dir), so this works in an editable install,
    a wheel installed anywhere, and a checkout run without installing.
    """
    try:
        root = Path(str(resources.files("ivfusion.assets")))
    except ModuleNotFoundError:
        # A checkout run without installing (the Hugging Face Space runs app.py from the
        # repository root): the folder that the install maps to ivfusion.assets.
        root = Path(__file__).resolve().parent.parent / "assets"
    return root / name if name else root


DEFAULT_WEIGHTS = bundled_path("weights/isfuse-ivfusion")
EXAMPLES_DIR = bundled_path("examples")
# Deprecated: only ivfusion.lab still reads it (for the examples); use EXAMPLES_DIR or
# bundled_path, which also work once installed. Remove when lab.py has switched.
REPO_ROOT = Path(__file__).resolve().parents[1]


class WeightsError(RuntimeError):
    """Weights that cannot be found or loaded, with the reason and what is accepted."""


def load_model(spec: str | os.PathLike | None = None, *, device: str | torch.device = "cpu") -> ISFuse:
    """Build ISFuse from `spec` (see the module docstring), in eval mode, on `device`."""
    if spec is None:
        spec = os.environ.get("IVFUSION_WEIGHTS") or DEFAULT_WEIGHTS
        if Path(spec) == DEFAULT_WEIGHTS and not (DEFAULT_WEIGHTS / "model.safetensors").is_file():
            raise WeightsError(
                f"the bundled default weights are missing ({DEFAULT_WEIGHTS / 'model.safetensors'}); "
                "pass a weights spec (a .safetensors file, a folder, the authors' best.pth, or "
                "hf://owner/repo), or 'untrained' for an untrained network"
            )
    spec_str = str(spec)
    if spec_str == UNTRAINED:
        model = untrained_model()
    elif spec_str.startswith("hf://"):
        model = _load_hub(spec_str[len("hf://"):])
    else:
        model = _load_local(Path(spec_str))
    return model.to(device).eval()


def untrained_model(config: ISFuseConfig | None = None, seed: int = 0) -> ISFuse:
    """A randomly initialised ISFuse (seeded) whose outputs mean nothing: a teaching contrast."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ISFuse(config)
    model.is_untrained = True
    return model


def describe(model: ISFuse) -> str:
    """One line naming where a model's weights came from."""
    return getattr(model, "weights_source", "untrained (random init)" if getattr(model, "is_untrained", False) else "in-memory")


def _load_local(path: Path) -> ISFuse:
    if not path.exists():
        raise WeightsError(f"weights not found: {path}")
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise WeightsError(f"{path} holds no model.safetensors")
        model = _load_safetensors(path / "model.safetensors")
    elif path.suffix == ".safetensors":
        model = _load_safetensors(path)
    elif path.suffix in (".pth", ".pt"):
        model = load_official_checkpoint(path)
    else:
        raise WeightsError(
            f"{path}: unknown weights format {path.suffix!r}; accepted: a folder, .safetensors, "
            "the authors' .pth, hf://owner/repo[/file] or 'untrained'"
        )
    model.weights_source = str(path)
    return model


def _load_safetensors(path: Path) -> ISFuse:
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path = path.with_name("config.json")
    config = ISFuseConfig.from_dict(json.loads(cfg_path.read_text())) if cfg_path.is_file() else ISFuseConfig()
    model = ISFuse(config)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise WeightsError(f"{path}: weights do not fit the ISFuse config {config.to_dict()} ({e})") from e
    if config.shared_encoder:  # the file holds a shared tensor under one of its two names
        alias = {"encoder_ir.": "encoder_vi.", "encoder_vi.": "encoder_ir."}
        missing = [k for k in missing if not any(k.startswith(a) and b + k[len(a):] in state for a, b in alias.items())]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not fit the ISFuse config {config.to_dict()} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


def _load_hub(ref: str) -> ISFuse:
    parts = ref.strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise WeightsError(f"hf://{ref}: expected hf://owner/repo or hf://owner/repo/file")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    try:
        from huggingface_hub import hf_hub_download

        if filename is None:
            model = ISFuse.from_pretrained(repo_id)
        else:
            local = Path(hf_hub_download(repo_id, filename))
            if filename.endswith(".safetensors"):
                try:
                    hf_hub_download(repo_id, str(Path(filename).with_name("config.json")))
                except Exception:  # a bare weights file with the default config is valid
                    pass
            model = _load_local(local)
    except WeightsError:
        raise
    except Exception as e:  # network, auth, missing repo: all end the same way for the user
        raise WeightsError(
            f"could not fetch hf://{ref} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Offline? Use a local weights path, or the bundled default (no spec)."
        ) from e
    model.weights_source = f"hf://{ref}"
    return model


# The authors' checkpoint names, mapped to this package's modules. Their encoder stages and
# decoder blocks are Sequential(conv 0, bn 1, act 2, conv 3, bn 4, act 5).
_SEQ = {"0": "0.conv", "1": "0.bn", "3": "1.conv", "4": "1.bn"}
_CFI_LEVEL = {"3": "0", "4": "1", "5": "2"}  # cfi3 works at H/4, our cfis[0]
_OFFICIAL_RULES = [
    (r"encoder_vis\.module([123])\.(\d)\.(.+)", lambda m: f"encoder_vi.stages.{int(m[1]) - 1}.{_SEQ[m[2]]}.{m[3]}"),
    (r"encoder_ir\.module([123])\.(\d)\.(.+)", lambda m: f"encoder_ir.stages.{int(m[1]) - 1}.{_SEQ[m[2]]}.{m[3]}"),
    (r"cfi([345])\.([qkv])_([vi])\.(.+)",
     lambda m: f"cfis.{_CFI_LEVEL[m[1]]}.attention.{m[2]}_{'vi' if m[3] == 'v' else 'ir'}.{m[4]}"),
    (r"cfi([345])\.gate\.([013])\.(.+)",
     lambda m: f"cfis.{_CFI_LEVEL[m[1]]}.gate.{ {'0': 'block.conv', '1': 'block.bn', '3': 'proj'}[m[2]] }.{m[3]}"),
    (r"cfi([345])\.refine\.([01])\.(.+)", lambda m: f"cfis.{_CFI_LEVEL[m[1]]}.refine.{['conv', 'bn'][int(m[2])]}.{m[3]}"),
    (r"adjust_channels([45])\.(\d)\.(.+)", lambda m: f"decoder.blocks.{int(m[1]) - 4}.{_SEQ[m[2]]}.{m[3]}"),
    (r"final_decoder\.0\.(.+)", lambda m: f"decoder.head.{m[1]}"),
    (r"adjust_channels3\.([01])\.(.+)", lambda m: f"unused.adjust_channels3.{['conv', 'bn'][int(m[1])]}.{m[2]}"),
    (r"(module[45])\.(\d)\.(.+)", lambda m: f"unused.{m[1]}.{_SEQ[m[2]]}.{m[3]}"),
]


def map_official_keys(state_dict: dict, keep_unused: bool = False) -> dict:
    """Rename the authors' checkpoint keys to ours. Unknown keys raise; unused ones are dropped
    unless keep_unused (then they land under `unused.`)."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")  # saved from DataParallel
        for pattern, rename in _OFFICIAL_RULES:
            m = re.fullmatch(pattern, key)
            if m:
                new = rename(m)
                if keep_unused or not new.startswith("unused."):
                    out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"not an ISFuse checkpoint: unexpected keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return out


def load_official_checkpoint(path: str | os.PathLike, keep_unused: bool = False) -> ISFuse:
    """Load the authors' best.pth (a plain state dict) with torch.load(weights_only=True)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise WeightsError(
            f"{path}: refused. Only plain tensor state dicts are loaded (torch.load with "
            f"weights_only=True); this file is corrupt or holds other objects ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict") or sd.get("model"), dict):
        sd = sd.get("state_dict") or sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(sd).__name__}")
    model = ISFuse(ISFuseConfig(with_unused=keep_unused))
    mapped = map_official_keys(sd, keep_unused)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: checkpoint does not fit ISFuse (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.weights_source = f"{path} (authors' checkpoint)"
    return model


def save_weights(model: ISFuse, folder: str | os.PathLike) -> Path:
    """Write model.safetensors + config.json (the Hub's `save_pretrained` layout)."""
    folder = Path(folder)
    model.save_pretrained(folder, config=model.config.to_dict())
    return folder / "model.safetensors"
