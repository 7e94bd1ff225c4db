"""Weights: the authors' checkpoint (key mapping, safe loading), safetensors, the Hub, defaults."""
import collections
import os
import subprocess
import sys

import pytest
import torch

import ivfusion
from ivfusion import ISFuse, ISFuseConfig, WeightsError, load_model
from ivfusion.hub import map_official_keys, save_weights

from .official import official_keys, synthetic_official_state_dict

pytestmark = pytest.mark.slow  # the whole module is slow: subprocesses and full checkpoints


class NotATensor:
    """A pickled object: must never be unpickled by load_model."""


def test_every_official_key_is_mapped_and_unused_ones_dropped():
    sd = synthetic_official_state_dict()
    mapped = map_official_keys(sd)
    model_keys = set(ISFuse().state_dict())
    assert set(mapped) == model_keys
    unused = [k for k, _, _ in official_keys() if k.startswith(("adjust_channels3", "module4", "module5"))]
    assert len(sd) - len(unused) == len(mapped) and unused
    kept = map_official_keys(sd, keep_unused=True)
    assert set(kept) == set(ISFuse(ISFuseConfig(with_unused=True)).state_dict())


def test_official_checkpoint_loads_through_load_model(tmp_path):
    sd = synthetic_official_state_dict(seed=1)
    torch.save(collections.OrderedDict(sd), tmp_path / "best.pth")
    model = load_model(tmp_path / "best.pth")
    assert not model.training
    torch.testing.assert_close(model.cfis[0].attention.q_vi.weight, sd["cfi3.q_v.weight"])
    torch.testing.assert_close(model.cfis[2].gate.proj.bias, sd["cfi5.gate.3.bias"])
    torch.testing.assert_close(model.decoder.blocks[1][1].bn.running_var, sd["adjust_channels5.4.running_var"])
    torch.testing.assert_close(model.encoder_vi.stages[2][0].conv.weight, sd["encoder_vis.module3.0.weight"])


def test_dataparallel_prefix_and_wrapped_dicts_load(tmp_path):
    sd = {f"module.{k}": v for k, v in synthetic_official_state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pth")
    assert isinstance(load_model(tmp_path / "wrapped.pth"), ISFuse)


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"encoder_vis.module1.0.weight": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_model(tmp_path / "evil.pth")


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsError, match="refused"):
        load_model(tmp_path / "corrupt.pth")
    torch.save({"backbone.layer1.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="unexpected keys"):
        load_model(tmp_path / "other.pth")
    sd = synthetic_official_state_dict()
    del sd["cfi4.gate.3.bias"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="missing"):
        load_model(tmp_path / "partial.pth")


def test_safetensors_round_trip_folder_and_file(tmp_path):
    model = ivfusion.hub.untrained_model(seed=5)
    save_weights(model, tmp_path / "w")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "w").iterdir()}
    x = torch.rand(1, 1, 20, 28)
    with torch.no_grad():
        ref = model.eval()(x, x)[0]
        for spec in (tmp_path / "w", tmp_path / "w" / "model.safetensors"):
            torch.testing.assert_close(load_model(spec)(x, x)[0], ref, rtol=0, atol=0)


def test_shared_encoder_config_round_trips(tmp_path):
    model = ISFuse(ISFuseConfig(shared_encoder=True, r=4))
    save_weights(model, tmp_path / "s")
    loaded = load_model(tmp_path / "s")
    assert loaded.config == model.config and loaded.encoder_vi is loaded.encoder_ir


def test_bad_specs_get_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format"):
        load_model(tmp_path / "w.onnx")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="hf://owner/repo"):
        load_model("hf://only-owner")


def test_weights_of_another_config_are_refused(tmp_path):
    save_weights(ISFuse(ISFuseConfig(dim=16)), tmp_path / "w16")
    (tmp_path / "w16" / "config.json").unlink()  # now read with the default dim 32
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(tmp_path / "w16" / "model.safetensors")


def test_hub_spec_offline_fails_fast_with_a_clear_message():
    """The Hub is the one external service: HF_HUB_OFFLINE=1 stands in for a dead network."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = ("import ivfusion\n"
            "try:\n    ivfusion.load_model('hf://someone/isfuse')\n"
            "except ivfusion.WeightsError as e:\n    print('WeightsError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "WeightsError: could not fetch hf://someone/isfuse" in out.stdout, out.stderr
    assert "Offline?" in out.stdout


def test_missing_default_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("IVFUSION_WEIGHTS", str(tmp_path / "missing"))
    with pytest.raises(WeightsError, match="not found"):
        load_model()


def test_untrained_model_says_so():
    model = load_model("untrained")
    assert "untrained" in ivfusion.hub.describe(model)


# --- every loading failure is a WeightsError naming the file and the problem -----------------

@pytest.mark.parametrize("fields, message", [
    ({"dim": 20000}, r"dim must be an integer in \[1, 128\], got 20000"),  # was a 14 GB allocation
    ({"dim": 0}, r"dim must be an integer in \[1, 128\], got 0"),
    ({"r": 4.5}, r"r must be an integer in \[1, 32\], got 4.5"),
    ({"gate_dim": True}, r"gate_dim must be an integer"),
    ({"eta": float("nan")}, r"eta must be a finite number in \(0, 1\), got nan"),
    ({"eta": 1.5}, r"eta must be a finite number in \(0, 1\)"),
    ({"negative_slope": float("inf")}, r"negative_slope must be a finite number in \[0, 1\)"),
    ({"shared_encoder": "no"}, r"shared_encoder must be true or false, got 'no'"),
])
def test_config_values_are_range_checked_before_anything_is_built(fields, message):
    with pytest.raises(ValueError, match=message):
        ISFuseConfig(**fields)


@pytest.mark.parametrize("text, message", [
    ('{"dim": 20000}', r"config\.json: ISFuseConfig\.dim must be an integer in \[1, 128\], got 20000"),
    ('{"dim": ', r"config\.json: not a readable JSON config"),
    ("[32, 8]", r"config\.json: an ISFuseConfig must be a JSON object of fields, got list"),
    ('{"heads": 4}', r"config\.json: unknown ISFuseConfig fields \['heads'\]"),
    ('{"eta": NaN}', r"config\.json: ISFuseConfig\.eta must be a finite number"),
    ("\udcff", r"config\.json: not a readable JSON config"),
])
def test_a_bad_config_json_names_the_file_and_the_field(tmp_path, text, message):
    save_weights(ivfusion.hub.untrained_model(), tmp_path / "w")
    (tmp_path / "w" / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(WeightsError, match=message):
        load_model(tmp_path / "w")


def _state(model=None):
    return {k: v.clone() for k, v in (model or ivfusion.hub.untrained_model()).state_dict().items()}


def test_non_finite_weights_are_refused_in_either_format(tmp_path):
    from safetensors.torch import save_file

    state = _state()
    state["cfis.1.gate.proj.bias"] = torch.full_like(state["cfis.1.gate.proj.bias"], float("nan"))
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match=r"nan\.safetensors: 1 tensor\(s\) hold NaN or inf \(cfis\.1\.gate\.proj\.bias\)"):
        load_model(tmp_path / "nan.safetensors")
    sd = synthetic_official_state_dict()
    sd["cfi4.q_v.weight"][0, 0] = float("inf")
    torch.save(sd, tmp_path / "inf.pth")
    with pytest.raises(WeightsError, match=r"inf\.pth: 1 tensor\(s\) hold NaN or inf \(cfis\.1\.attention\.q_vi\.weight\)"):
        load_model(tmp_path / "inf.pth")
    state = _state()
    state["decoder.blocks.1.1.bn.running_var"][3] = -1.0
    save_file(state, str(tmp_path / "negvar.safetensors"))
    with pytest.raises(WeightsError, match=r"negvar\.safetensors: negative BatchNorm variances in decoder\.blocks\.1\.1\.bn"):
        load_model(tmp_path / "negvar.safetensors")


def test_truncated_foreign_and_misshapen_safetensors_are_named(tmp_path):
    from safetensors.torch import save_file

    from ivfusion.hub import DEFAULT_WEIGHTS

    data = (DEFAULT_WEIGHTS / "model.safetensors").read_bytes()
    for name, cut in (("half.safetensors", len(data) // 2), ("head.safetensors", 100)):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(WeightsError, match=rf"{name}: not a readable safetensors file"):
            load_model(tmp_path / name)
    save_file({"backbone.weight": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(WeightsError, match=r"foreign\.safetensors: the weights do not fit .*unexpected \['backbone\.weight'\]"):
        load_model(tmp_path / "foreign.safetensors")
    state = _state()
    state["encoder_ir.stages.0.0.conv.weight"] = torch.zeros(7, 1, 3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(WeightsError, match=r"encoder_ir\.stages\.0\.0\.conv\.weight has shape \(7, 1, 3, 3\), "
                                           r"the config needs \(32, 1, 3, 3\)"):
        load_model(tmp_path / "shape.safetensors")
    state = _state()
    state["decoder.head.weight"] = state["decoder.head.weight"].to(torch.int32)
    save_file(state, str(tmp_path / "int.safetensors"))
    with pytest.raises(WeightsError, match=r"decoder\.head\.weight holds integers, expected floats"):
        load_model(tmp_path / "int.safetensors")


def test_junk_files_and_folders_are_named(tmp_path):
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(WeightsError, match=r"zip\.pth: refused\. Only plain tensor state dicts"):
        load_model(tmp_path / "zip.pth")
    torch.save({"w": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")
    with pytest.raises(WeightsError, match=r"module\.pth: refused"):
        load_model(tmp_path / "module.pth")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty\.safetensors: the file is empty"):
        load_model(tmp_path / "empty.safetensors")
    (tmp_path / "d").mkdir()
    with pytest.raises(WeightsError, match=r"d: the folder holds no model\.safetensors; accepted: a folder"):
        load_model(tmp_path / "d")
    with pytest.raises(WeightsError, match=r"the weights spec is empty; accepted"):
        load_model("")


def test_junk_environment_weights_raise_weights_error(tmp_path, monkeypatch):
    """The app falls back to the bundled weights on a WeightsError, so junk must end as one."""
    (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk" * 50)
    monkeypatch.setenv("IVFUSION_WEIGHTS", str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match=r"junk\.pth: refused"):
        load_model()


def test_a_deflated_pth_that_would_unpack_to_hundreds_of_mb_is_refused_from_its_directory(tmp_path):
    """Issue 19, item 6: a 1.9 MB deflated .pth peaked at 2.1 GB before it was refused."""
    from ivfusion.hub import MAX_WEIGHTS_BYTES, WeightsError, load_model
    from tests.bad_files import pth_bomb

    bomb = tmp_path / "bomb.pth"
    pth_bomb(bomb, MAX_WEIGHTS_BYTES + 2**24)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(WeightsError, match="unpack to .* refused before unpacking"):
        load_model(bomb)
    header_bomb = tmp_path / "model.safetensors"
    header_bomb.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(WeightsError, match="header claims"):
        load_model(header_bomb)


def test_bundled_names_the_shipped_weights_whatever_ivfusion_weights_says(monkeypatch):
    from ivfusion.hub import DEFAULT_WEIGHTS

    monkeypatch.setenv("IVFUSION_WEIGHTS", "untrained")
    assert getattr(load_model(None), "is_untrained", False)  # no spec: the environment's choice
    bundled = load_model("bundled")
    assert bundled.weights_source == str(DEFAULT_WEIGHTS) and not getattr(bundled, "is_untrained", False)
