"""Packaging: a plain (non-editable) install, run from another folder, fuses with the bundled
weights; the checkout itself (editable install, or app.py run from the repository root without
installing) finds the same files; the `ivfusion` command shows import errors as themselves."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the whole module is slow: pip installs in subprocesses

REPO = Path(__file__).resolve().parents[1]

# Run by the installed copy, from a folder that is not the checkout: imports ivfusion, says
# where from, and fuses a bundled example pair with the bundled default weights.
FUSE_BUNDLED = """
import json, sys
import numpy as np
import ivfusion
from ivfusion import hub, io
ex = hub.EXAMPLES_DIR
vis, ir = io.read_image(ex / "vi" / "msrs_00037N.png"), io.read_image(ex / "ir" / "msrs_00037N.png")
fuser = ivfusion.Fuser(device="cpu")
res = fuser.fuse(vis, ir)
print(json.dumps({
    "package": ivfusion.__file__, "weights": str(hub.DEFAULT_WEIGHTS), "examples": str(ex),
    "source": fuser.weights_source, "shape": list(res.fused_rgb.shape), "dtype": str(res.fused_rgb.dtype),
    "std": float(res.fused_rgb.std()), "untrained": bool(getattr(fuser.model, "is_untrained", False)),
}))
"""


def _source_copy(dest: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) copied to `dest`, so that
    the build sees exactly the checkout and leaves no build/ folder in it."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from the working tree, installed with `pip install --target`: its folder."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = _source_copy(tmp / "src")
    wheels, target = tmp / "wheels", tmp / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("ivfusion-*.whl")
    inst = subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr
    return target


def _run_installed(target: Path, cwd: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("IVFUSION_WEIGHTS", None)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_wheel_holds_the_bundled_weights_and_examples(installed):
    assets = installed / "ivfusion" / "assets"
    for rel in ("weights/isfuse-ivfusion/model.safetensors", "weights/isfuse-ivfusion/config.json",
                "weights/isfuse-ivfusion/MODEL_CARD.md", "examples/README.md"):
        assert (assets / rel).is_file(), rel
    for src in sorted((REPO / "assets" / "examples").rglob("*")):
        if src.is_file():  # every example pair the checkout has
            assert (assets / "examples" / src.relative_to(REPO / "assets" / "examples")).is_file(), src
    assert (assets / "weights/isfuse-ivfusion/model.safetensors").read_bytes() == \
        (REPO / "assets/weights/isfuse-ivfusion/model.safetensors").read_bytes()
    # every file of the package that the repository holds (its modules and the data beside them)
    # is in the wheel; installed, ignored files (npm's node_modules, caches) are not the package's
    tracked = subprocess.run(["git", "ls-files", "ivfusion"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [REPO / line for line in tracked.stdout.splitlines()]
    assert any(f.name == "lab.js" for f in files)
    for file in files:
        assert (installed / file.relative_to(REPO)).is_file(), file


def test_installed_copy_fuses_with_the_bundled_weights_from_another_folder(installed, tmp_path):
    import json

    out = _run_installed(installed, tmp_path, FUSE_BUNDLED)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    site = str(installed.resolve())
    # the installed copy, not the checkout (the editable install is on the same interpreter)
    assert info["package"].startswith(site) and not info["package"].startswith(str(REPO))
    assert info["weights"].startswith(site) and info["examples"].startswith(site)
    assert info["source"].startswith(site) and not info["untrained"]
    assert info["shape"] == [480, 640, 3] and info["dtype"] == "uint8" and info["std"] > 5


def test_installed_command_fuses_a_real_pair(installed, tmp_path, shared_dir):
    d = shared_dir / "data" / "roadscene" / "test"
    out = _run_installed(installed, tmp_path, "import sys; from ivfusion.cli import main; sys.exit(main())",
                         "fuse", "--infrared", str(d / "ir" / "FLIR_00211.jpg"), "--visible", str(d / "vi" / "FLIR_00211.jpg"),
                         "--out", str(tmp_path / "fused.png"), "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert str(installed.resolve()) in out.stdout  # "weights: <site>/ivfusion/assets/..."
    from ivfusion import read_image

    assert read_image(tmp_path / "fused.png").shape == (301, 496, 3)


def test_checkout_finds_the_assets_with_and_without_the_editable_install():
    """The editable install maps ivfusion.assets to assets/; a checkout run without installing
    (the Space runs app.py from the repository root) falls back to the same folder."""
    from ivfusion import hub

    assert hub.DEFAULT_WEIGHTS == REPO / "assets" / "weights" / "isfuse-ivfusion"
    assert (hub.DEFAULT_WEIGHTS / "model.safetensors").is_file()
    assert hub.EXAMPLES_DIR == REPO / "assets" / "examples" and (hub.EXAMPLES_DIR / "vi").is_dir()
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            "import importlib.util, ivfusion.hub as h\n"
            "print(importlib.util.find_spec('ivfusion.assets') is None, h.DEFAULT_WEIGHTS, h.EXAMPLES_DIR)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    no_spec, weights, examples = out.stdout.split()
    assert no_spec == "True"  # really the uninstalled checkout
    assert Path(weights) == hub.DEFAULT_WEIGHTS and Path(examples) == hub.EXAMPLES_DIR


def test_cli_shows_a_broken_import_as_itself(monkeypatch):
    from ivfusion import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", "ivfusion._no_such_module_")
    with pytest.raises(ModuleNotFoundError, match="ivfusion._no_such_module_"):
        cli.main(["broken"])
