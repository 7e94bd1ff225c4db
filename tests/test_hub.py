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
