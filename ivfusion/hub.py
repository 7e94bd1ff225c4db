"""Loading and saving weights: bundled defaults, local files, the authors' checkpoint, the Hub.

`load_model(spec)` accepts:
  None                   the bundled default weights, or the spec in the IVFUSION_WEIGHTS
                         environment variable when it is set;
  "bundled"              the default weights shipped with the package (DEFAULT_WEIGHTS,
                         `DEFAULT_NAME`), whatever IVFUSION_WEIGHTS says;
  a shipped name         weights shipped with the package under a name (`NAMED_WEIGHTS`: "v2");
                         a name wins over a folder of the same name (write ./v2 for the folder);
  a folder               holding model.safetensors and config.json (`save_pretrained` layout);
  a .safetensors file    its config from the sibling config.json (default config if absent);
  a .pth / .pt file      the authors' released checkpoint (best.pth), keys mapped to ours;
  hf://owner/repo[/file] a Hugging Face Hub repository (a file in it, or model.safetensors);
  "untrained"            a freshly initialised network (seeded), for teaching contrasts only.

The network never holds a caller up for long: an hf:// spec first checks that the Hub opens a
connection (`hub_reachable`, 3 s), then the whole fetch has a deadline (`HUB_DEADLINE_S`,
IVFUSION_HUB_DEADLINE_S), connect and read together. Past it the caller gets a WeightsError
at once, while the download goes on in a background thread into the Hub's cache, where the
next load finds it. HF_HUB_OFFLINE=1 uses the local cache only.
"""
from __future__ import annotations

import os
import re
import struct
import threading
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import torch

from .config import ISFuseConfig
from .modeling import ISFuse

from .shipped import ACCEPTED_SPECS, BUNDLED, DEFAULT_NAME, NAMED_WEIGHTS, UNTRAINED  # noqa: F401 - re-exported
HUB_DEADLINE_S = 15.0  # a whole fetch from the network (connect and read), IVFUSION_HUB_DEADLINE_S


def hub_deadline_s(env: dict[str, str] | None = None) -> float:
    """The network deadline in seconds (IVFUSION_HUB_DEADLINE_S, default HUB_DEADLINE_S)."""
    raw = (os.environ if env is None else env).get("IVFUSION_HUB_DEADLINE_S", "").strip()
    if not raw:
        return HUB_DEADLINE_S
    try:
        value = float(raw)
        ok = 0 < value <= 3600
    except ValueError:
        ok = False
    if not ok:
        raise WeightsError(f"IVFUSION_HUB_DEADLINE_S={raw!r}: expected seconds from 0 to 3600 "
                           f"(unset: {HUB_DEADLINE_S:g})")
    return value


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set: hf:// specs then read the local Hub cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (HF_ENDPOINT) opens a TCP connection within `timeout`
    seconds (True when HF_HUB_OFFLINE is set: then only the local cache is used). Saves the Hub
    client's half a minute of retries on a machine without network."""
    import socket
    from urllib.parse import urlparse

    if hub_offline():
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except (OSError, ValueError):
        return False


def run_with_deadline(fn, seconds: float, late: str):
    """fn() in a background thread, waited for at most `seconds`: its value, or its exception;
    past the deadline a WeightsError(`late`), while fn goes on (a download then lands in its
    cache for the next call)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    thread = threading.Thread(target=target, name="ivfusion-fetch", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise WeightsError(late)
    if "error" in box:
        raise box["error"]
    return box["value"]


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


def named_path(name: str) -> Path:
    """The folder of shipped weights `name` (a key of NAMED_WEIGHTS)."""
    return bundled_path(NAMED_WEIGHTS[name][0])


DEFAULT_WEIGHTS = named_path(DEFAULT_NAME)
EXAMPLES_DIR = bundled_path("examples")


class WeightsError(RuntimeError):
    """Weights that cannot be found or loaded, with the file, the reason and what is accepted."""


# ISFuse within ISFuseConfig's bounds is at most a few MB (13 MB at dim 128); a far larger file
# is not ISFuse weights, and reading it would only cost memory.
MAX_WEIGHTS_BYTES = 256 * 2**20
MAX_CONFIG_BYTES = 2**20


def load_model(spec: str | os.PathLike | None = None, *, device: str | torch.device = "cpu") -> ISFuse:
    """Build ISFuse from `spec` (see the module docstring), in eval mode, on `device`.

    Every failure is a WeightsError naming the file and the problem: missing, unreadable or
    truncated files, a bad config.json (values are range-checked before anything is built),
    keys or shapes that do not fit, pickled objects, and tensors holding NaN or inf.
    """
    if spec is None:
        spec = os.environ.get("IVFUSION_WEIGHTS") or DEFAULT_WEIGHTS
    if str(spec) == BUNDLED:
        spec = DEFAULT_WEIGHTS
    elif str(spec) in NAMED_WEIGHTS:
        spec = named_path(str(spec))
    shipped = {named_path(n): n for n in NAMED_WEIGHTS}
    if Path(spec) in shipped and not (Path(spec) / "model.safetensors").is_file():
        raise WeightsError(
            f"the shipped weights {shipped[Path(spec)]!r} are missing ({Path(spec) / 'model.safetensors'}); "
            "pass a weights spec (a .safetensors file, a folder, the authors' best.pth, or "
            "hf://owner/repo), or 'untrained' for an untrained network"
        )
    spec_str = str(spec)
    if not spec_str.strip():
        raise WeightsError(f"the weights spec is empty; accepted: {ACCEPTED_SPECS}")
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
        raise WeightsError(f"weights not found: {path}; accepted: {ACCEPTED_SPECS}")
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise WeightsError(f"{path}: the folder holds no model.safetensors; accepted: {ACCEPTED_SPECS}")
        file = path / "model.safetensors"
    elif path.suffix in (".safetensors", ".pth", ".pt"):
        file = path
    else:
        raise WeightsError(f"{path}: unknown weights format {path.suffix!r}; accepted: {ACCEPTED_SPECS}")
    try:
        size = file.stat().st_size
        if size == 0:
            raise WeightsError(f"{file}: the file is empty")
        if size > MAX_WEIGHTS_BYTES:
            raise WeightsError(f"{file}: {size / 2**20:,.0f} MB is far more than ISFuse weights hold "
                               f"(at most {MAX_WEIGHTS_BYTES / 2**20:.0f} MB accepted)")
        model = _load_safetensors(file) if file.suffix == ".safetensors" else load_official_checkpoint(file)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed file can raise anything in parsers we do not own
        raise WeightsError(f"{file}: could not be loaded ({type(e).__name__}: {_first_line(e)})") from e
    model.weights_source = str(path)
    return model


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else "no details"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_config(path: Path) -> ISFuseConfig:
    """ISFuseConfig from a config.json, range-checked before anything is built; WeightsError
    names the file and the field."""
    import json

    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise WeightsError(f"{path}: {path.stat().st_size:,} bytes is not an ISFuse config")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: not a readable JSON config ({_first_line(e)})") from e
    try:
        return ISFuseConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{path}: {_first_line(e)}") from e


def _check_layout(path: Path, model: ISFuse, found: dict[str, tuple[tuple[int, ...], bool]]) -> None:
    """Refuse, before any tensor is read, a state whose keys, shapes or dtypes do not fit the
    model. found: key -> (shape, is floating point)."""
    expected = model.state_dict()
    config = model.config.to_dict()
    missing = [k for k in expected if k not in found]
    if model.config.shared_encoder:  # the file holds a shared tensor under one of its two names
        alias = {"encoder_ir.": "encoder_vi.", "encoder_vi.": "encoder_ir."}
        missing = [k for k in missing if not any(k.startswith(a) and b + k[len(a):] in found for a, b in alias.items())]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        raise WeightsError(f"{path}: the weights do not fit the ISFuse config {config} "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, (shape, is_float) in found.items():
        want = expected[key]
        if tuple(shape) != tuple(want.shape):
            raise WeightsError(f"{path}: the weights do not fit the ISFuse config {config}: {key} has shape "
                               f"{tuple(shape)}, the config needs {tuple(want.shape)}")
        if is_float != want.is_floating_point():
            raise WeightsError(f"{path}: {key} holds {'floats' if is_float else 'integers'}, expected "
                               f"{'floats' if want.is_floating_point() else 'integers'}")


def _check_values(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or inf anywhere, and negative BatchNorm variances: both give NaN output."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensor(s) hold NaN or inf ({', '.join(bad[:3])}); "
                           "such weights give NaN output")
    neg = [k for k, t in state.items() if k.endswith("running_var") and bool((t < 0).any())]
    if neg:
        raise WeightsError(f"{path}: negative BatchNorm variances in {', '.join(neg[:3])}")


def _load_safetensors(path: Path) -> ISFuse:
    from safetensors import safe_open

    check_unpacked_size(path)
    cfg_path = path.with_name("config.json")
    config = read_config(cfg_path) if cfg_path.is_file() else ISFuseConfig()
    model = ISFuse(config)
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            _check_layout(path, model, {k: (tuple(s.get_shape()), s.get_dtype() in ("F16", "BF16", "F32", "F64"))
                                        for k, s in slices.items()})
            state = {k: f.get_tensor(k) for k in slices}
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, truncated data ...
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(e)})") from e
    _check_values(path, state)
    model.load_state_dict(state, strict=False)  # keys and shapes were checked above
    return model


def _load_hub(ref: str) -> ISFuse:
    parts = ref.strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise WeightsError(f"hf://{ref}: expected hf://owner/repo or hf://owner/repo/file")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "model.safetensors"
    if not hub_reachable():
        raise WeightsError(f"could not fetch hf://{ref}: the Hugging Face Hub cannot be reached (offline?). "
                           "Set HF_HUB_OFFLINE=1 to use a copy in the local Hub cache, or use a local weights path.")

    def fetch() -> Path:
        from huggingface_hub import hf_hub_download

        local = Path(hf_hub_download(repo_id, filename))
        if filename.endswith(".safetensors"):
            try:
                hf_hub_download(repo_id, str(Path(filename).with_name("config.json")))
            except Exception:  # a bare weights file with the default config is valid
                pass
        return local

    deadline = hub_deadline_s()
    try:
        local = run_with_deadline(fetch, deadline, f"could not fetch hf://{ref}: the Hugging Face Hub did not answer "
                                                   f"within {deadline:g} s (the download goes on in the background)")
    except WeightsError:
        raise
    except Exception as e:  # network, auth, missing repo: all end the same way for the user
        raise WeightsError(
            f"could not fetch hf://{ref} from the Hugging Face Hub ({type(e).__name__}: {_first_line(e)}). "
            "Offline? Use a local weights path, or the bundled default (no spec)."
        ) from e
    model = _load_local(local)  # the same checks as a local file
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


def check_unpacked_size(path: Path, limit: int = MAX_WEIGHTS_BYTES) -> None:
    """Refuse a weights file that would unpack to more than `limit` bytes, from its directory
    alone: a .pth is a zip whose entries torch allocates at their declared sizes, and a
    deflated entry can declare gigabytes in a file of a few MB; a safetensors file declares
    its JSON header's length in its first 8 bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix == ".safetensors":
        if len(head) == 8 and struct.unpack("<Q", head)[0] > min(limit, path.stat().st_size):
            raise WeightsError(f"{path}: not a readable safetensors file (its header claims "
                               f"{struct.unpack('<Q', head)[0]:,} bytes, more than the file holds; refused unread)")
        return
    if not zipfile.is_zipfile(path):
        return  # a legacy (non-zip) torch file: torch.load reads it as it is, bounded by its size
    with zipfile.ZipFile(path) as z:
        total = sum(info.file_size for info in z.infolist())
    if total > limit:
        raise WeightsError(f"{path}: its entries unpack to {total / 2**20:,.0f} MB, far more than ISFuse weights "
                           f"hold (at most {limit / 2**20:.0f} MB accepted); refused before unpacking")


def load_official_checkpoint(path: str | os.PathLike, keep_unused: bool = False) -> ISFuse:
    """Load the authors' best.pth (a plain state dict) with torch.load(weights_only=True)."""
    path = Path(path)
    check_unpacked_size(path)
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol chatter about files refused anyway
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals, corrupt zips, truncation ...
        raise WeightsError(
            f"{path}: refused. Only plain tensor state dicts are loaded (torch.load with "
            f"weights_only=True); this file is corrupt or holds other objects ({type(e).__name__}: "
            f"{_first_line(e)})"
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict") or sd.get("model"), dict):
        sd = sd.get("state_dict") or sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise WeightsError(f"{path}: expected a state dict of named tensors, got {type(sd).__name__}")
    model = ISFuse(ISFuseConfig(with_unused=keep_unused))
    try:
        mapped = map_official_keys(sd, keep_unused)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    _check_layout(path, model, {k: (tuple(t.shape), t.is_floating_point()) for k, t in mapped.items()})
    _check_values(path, mapped)
    model.load_state_dict(mapped, strict=False)  # keys and shapes were checked above
    model.weights_source = f"{path} (authors' checkpoint)"
    return model


def save_weights(model: ISFuse, folder: str | os.PathLike) -> Path:
    """Write model.safetensors + config.json (the Hub's `save_pretrained` layout)."""
    folder = Path(folder)
    model.save_pretrained(folder, config=model.config.to_dict())
    return folder / "model.safetensors"
