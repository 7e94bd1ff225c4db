"""The fast inference path (ivfusion.fast) against the reference forward, and `ivfusion bench`.

Thresholds are what was measured plus margin: fp32 fast vs reference deviates by at most
~1e-6 on real pairs (float rounding of a different summation order), so 1e-5 is asserted;
bf16 (with the first layer in fp32) stays under 1/255 with these synthetic weights on the
crops below, which is asserted; with the shipped weights it exceeds 2/255 on some pairs, which
is why "auto" never picks it (docs/PERFORMANCE.md).
"""
import json

import pytest
import torch
import torch.nn.functional as F

from ivfusion.bench.deviation import max_deviation, pair_tensors, synthetic_model
from ivfusion.fast import BOUND, FastConv, FastISFuse, build_fast, fold_bn, make_net, resolve_path
from ivfusion.modeling import ISFuse
from ivfusion.modeling.blocks import ConvBNAct, double_conv
from ivfusion.modeling.cfi import GatedMix, PooledCrossAttention
from ivfusion.predictor import Fuser

FP32_TOL = 1e-5
BF16_TOL = 1.0 / 255


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # one torch thread: on a busy 2-core machine every parallel region waits for a core, which
    # makes small forwards 10x slower with 2 threads; the results do not depend on it
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return synthetic_model(3)


@pytest.fixture(scope="module")
def fast(model):
    return build_fast(model)


@pytest.fixture(scope="module")
def pairs(shared_dir):
    """Two RoadScene test pairs at native sizes (496x301 and 505x351: odd heights)."""
    rs = pair_tensors(shared_dir / "data" / "roadscene" / "test", limit=2)
    assert [tuple(v.shape[-2:]) for _, v, _ in rs] == [(301, 496), (351, 505)]
    return rs


def test_bn_folding_matches_conv_bn():
    torch.manual_seed(0)
    block = ConvBNAct(32, 16).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.2, 3)
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 32, 19, 23)
    w, b = fold_bn(block.conv, block.bn)
    with torch.no_grad():
        ref = block.bn(block.conv(x))
        assert (F.conv2d(x, w, b, padding=1) - ref).abs().max() < 1e-5
        # the folded statistics really matter: without them the result is far off
        assert (block.conv(x) - ref).abs().max() > 0.1
        fused = FastConv.from_block(block)(x.contiguous(memory_format=torch.channels_last))
        assert (fused - block(x)).abs().max() < 1e-5


def test_fast_matches_reference_on_real_pairs(model, fast, pairs):
    d = max_deviation(model, fast, pairs)
    assert d["fused"] < FP32_TOL and d["gates"] < FP32_TOL, d
    assert d["fused"] <= BOUND


def test_fast_matches_reference_with_trained_weights(fast, pairs):
    from ivfusion.hub import DEFAULT_WEIGHTS, load_model

    trained = load_model(DEFAULT_WEIGHTS)  # the shipped weights must exist: fail if they do not
    d = max_deviation(trained, build_fast(trained), pairs[:1])
    assert d["fused"] < FP32_TOL and d["gates"] < FP32_TOL, d


@pytest.mark.parametrize("h,w", [(4, 4), (5, 7), (37, 53), (64, 64), (131, 97)])
def test_fast_matches_reference_at_odd_sizes(model, fast, pairs, h, w):
    _, vis, ir = pairs[0]
    vis, ir = vis[..., 40:40 + h, 60:60 + w], ir[..., 40:40 + h, 60:60 + w]
    with torch.inference_mode():
        f_ref, g_ref = model(vis, ir)
        f_fast, g_fast = fast(vis, ir)
    assert f_fast.shape == f_ref.shape == (1, 1, h, w)
    assert [g.shape for g in g_fast] == [g.shape for g in g_ref]
    assert (f_fast - f_ref).abs().max() < FP32_TOL
    assert max((a - b).abs().max() for a, b in zip(g_fast, g_ref)) < FP32_TOL


def test_bf16_path_within_bound(model, pairs):
    bf16 = build_fast(model, dtype="bf16")
    _, vis, ir = pairs[0]
    crops = [("crop", vis[..., :120, :160], ir[..., :120, :160]), ("odd", vis[..., 7:98, 3:120], ir[..., 7:98, 3:120])]
    d = max_deviation(model, bf16, crops)
    assert 0 < d["fused"] < BF16_TOL, d  # bf16 really changes the arithmetic, and stays close
    assert bf16.path == "fast-bf16"


@pytest.mark.slow
def test_the_mixed_path_holds_the_bound_on_real_pairs_where_bf16_alone_does_not():
    """fp32 encoders with bf16 CFIs and decoder ("fast-mixed") stay within the 2/255 bound on
    full-size real pairs, with the shipped weights, on the bundled pairs where full bf16
    deviates most."""
    from ivfusion.hub import DEFAULT_WEIGHTS, EXAMPLES_DIR, load_model

    trained = load_model(DEFAULT_WEIGHTS)
    worst = pair_tensors(EXAMPLES_DIR, names=["msrs_00002D", "msrs_00039N"])
    assert len(worst) == 2
    mixed = build_fast(trained, dtype="bf16", fp32_encoders=True)
    assert mixed.path == "fast-mixed"
    d = max_deviation(trained, mixed, worst)
    assert 0 < d["fused"] < BOUND and d["gates"] < BOUND, d
    full = max_deviation(trained, build_fast(trained, dtype="bf16"), worst)
    assert full["fused"] > d["fused"], (full, d)  # the encoders in bf16 are what breaks the bound


def test_batch_consistency(model, fast, pairs):
    _, vis, ir = pairs[0]
    vis, ir = vis[..., :96, :128], ir[..., :96, :128]
    torch.manual_seed(1)
    mask = (torch.rand_like(ir) > 0.3).float()
    _, vis2, ir2 = pairs[1]
    vb = torch.cat([vis, vis, vis, vis2[..., :96, :128]])
    ib = torch.cat([ir, ir * mask, torch.zeros_like(ir), ir2[..., :96, :128]])
    with torch.inference_mode():
        fb, gb = fast(vb, ib)
        for k in range(4):
            f1, g1 = model(vb[k:k + 1], ib[k:k + 1])
            assert (fb[k:k + 1] - f1).abs().max() < FP32_TOL
            assert max((a[k:k + 1] - b).abs().max() for a, b in zip(gb, g1)) < FP32_TOL


def test_fast_net_is_derived_by_swapping(model, fast):
    """No reference module with a fast form is left, the reference wiring (Encoder, CFI,
    ISFuse) is kept, the Decoder's blocks run in FastDecoder, and the weights are copies: the
    reference is untouched."""
    kinds = {type(m).__name__ for m in fast.model.modules()}
    assert not kinds & {"ConvBNAct", "PooledCrossAttention", "GatedMix", "BatchNorm2d", "Conv2d"}
    assert {"ISFuse", "Encoder", "CFI", "InvarianceGate", "FastDecoder", "FastAttention", "FastMix", "PatchConv"} <= kinds
    n_blocks = sum(isinstance(m, ConvBNAct) for m in model.modules())
    n_fast = sum(type(m).__name__ in ("FastConv", "PatchConv") for m in fast.model.modules())
    assert n_fast == n_blocks + 1  # every conv block, plus the decoder's bare head convolution
    assert any(isinstance(m, PooledCrossAttention) for m in model.modules())  # the reference keeps its own


def test_a_changed_architecture_needs_no_change_in_fast(pairs):
    """Change modeling the way a contributor might (a deeper decoder block, another r, a
    shared encoder): the derived fast net follows and stays exact."""
    from ivfusion import ISFuseConfig

    _, vis, ir = pairs[1]
    vis, ir = vis[..., :75, :99], ir[..., :75, :99]
    for config in (ISFuseConfig(r=4), ISFuseConfig(shared_encoder=True, dim=16)):
        model = synthetic_model(5, config)
        model.decoder.blocks[0] = torch.nn.Sequential(*double_conv(config.dim, config.dim), ConvBNAct(config.dim, config.dim))
        model.eval()
        d = max_deviation(model, build_fast(model), [("crop", vis, ir)])
        assert d["fused"] < FP32_TOL and d["gates"] < FP32_TOL, (config, d)
    assert isinstance(model.cfis[0].mix, GatedMix)


def test_encode_and_fuse_features_match_forward(model, fast, pairs):
    _, vis, ir = pairs[0]
    vis, ir = vis[..., :61, :83], ir[..., :61, :83]
    with torch.inference_mode():
        f_ref, g_ref, c_ref = model.fuse_features(*model.encode(vis, ir), return_cross=True)
        f, g, c = fast.fuse_features(*fast.encode(vis, ir), return_cross=True)
        keep = [t.clone() for t in c]
        fast(1 - vis, 1 - ir)  # another call must not overwrite the returned cross features
    assert (f - f_ref).abs().max() < FP32_TOL
    assert max((a - b).abs().max() for a, b in zip(g, g_ref)) < FP32_TOL
    scale = max(t.abs().max() for t in c_ref)
    assert max((a - b).abs().max() for a, b in zip(c, c_ref)) < FP32_TOL * scale
    assert all(torch.equal(a, b) for a, b in zip(c, keep))


def test_outputs_do_not_alias_workspace(fast, pairs):
    _, vis, ir = pairs[0]
    vis, ir = vis[..., :64, :64], ir[..., :64, :64]
    with torch.inference_mode():
        f1, g1 = fast(vis, ir)
        keep = f1.clone(), [g.clone() for g in g1]
        fast(1 - vis, 1 - ir)  # a second call reuses the scratch buffers
    assert torch.equal(f1, keep[0]) and all(torch.equal(a, b) for a, b in zip(g1, keep[1]))


def test_fuser_paths(model, shared_dir):
    import numpy as np

    from ivfusion import io

    assert resolve_path("auto", "cpu") == "fast"  # the same figures on every CPU
    assert resolve_path("fast-mixed", "cpu") == "fast-mixed"
    assert resolve_path("reference", "cpu") == "reference"
    assert resolve_path("auto", "cuda") == "reference"  # measured slower on an H200 (docs/PERFORMANCE.md)
    assert resolve_path("fast", "cuda") == "fast"
    with pytest.raises(ValueError, match="unknown inference path"):
        resolve_path("turbo", "cpu")
    net, name = make_net(model, torch.device("cpu"), "reference")
    assert net is model and name == "reference"
    d = shared_dir / "data" / "roadscene" / "test"
    vis, ir = io.read_image(d / "vi" / "FLIR_00211.jpg"), io.read_image(d / "ir" / "FLIR_00211.jpg")
    ref = Fuser(model, device="cpu", max_side=None, path="reference")
    auto = Fuser(model, device="cpu", max_side=None)
    assert ref.net is model and ref.path == "reference"
    assert isinstance(auto.net, FastISFuse) and auto.path == resolve_path("auto", "cpu")
    a = ref.fuse(vis, ir, "complementary", seed=4)
    b = auto.fuse(vis, ir, "complementary", seed=4)
    assert np.abs(a.fused_y - b.fused_y).max() < FP32_TOL
    assert all(np.abs(x - y).max() < FP32_TOL for x, y in zip(a.gates, b.gates))


def test_macs_match_the_paper():
    from ivfusion.bench import count_macs

    x = torch.rand(1, 1, 128, 128)  # every reference op scales with the pixel count
    ref = count_macs(ISFuse().eval(), x, x)
    assert abs(4 * ref / 6.0e9 - 1) < 0.01  # the paper's 6.0 G at 256x256
    fast_macs = count_macs(build_fast(ISFuse()), x, x)
    assert 0.8 * ref < fast_macs < 0.95 * ref  # K/V after pooling, Q folded into the keys


def test_bench_command_end_to_end(tmp_path, shared_dir):
    from ivfusion.cli import main

    from ivfusion import io

    # one real pair, cropped to an odd size, for the deviation check
    src = shared_dir / "data" / "roadscene" / "test"
    for kind in ("ir", "vi"):
        (tmp_path / "pairs" / kind).mkdir(parents=True)
        io.write_png(tmp_path / "pairs" / kind / "crop.png", io.read_image(src / kind / "FLIR_00211.jpg")[50:149, 80:217])
    out = tmp_path / "bench.json"
    rc = main(["bench", "--weights", "synthetic", "--sizes", "40x36,33x21", "--runs", "3", "--warmup", "1",
               "--paths", "reference,fast", "--pairs", str(tmp_path / "pairs"),
               "--max-pairs", "1", "--metrics-repeats", "1", "--threads", "1", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["params"] == {"used": 192388, "with_unused": 231780}
    assert r["threads"] == 1 and r["auto_path"] == "fast"
    assert [e["size"] for e in r["sizes"]] == ["40x36", "33x21"]
    for e in r["sizes"]:
        assert set(e["paths"]) == {"reference", "fast"}
        assert 0 < e["macs"]["fast"] < e["macs"]["reference"]
        for p in e["paths"].values():
            assert {"median_s", "p90_s", "cpu_median_s", "images_per_s", "speedup", "speedup_min", "max_dev", "memory"} <= set(p)
            assert len(p["wall_s"]) == 3 and p["p90_s"] >= p["median_s"] > 0
        assert e["paths"]["reference"]["speedup"] == 1.0 and e["paths"]["reference"]["max_dev"] == 0
        assert e["paths"]["fast"]["max_dev"] < FP32_TOL
    assert r["real_pairs"]["count"] == 1 and r["real_pairs"]["sizes"] == ["137x99"]
    assert r["real_pairs"]["max_dev"]["fast"]["fused"] < FP32_TOL
    assert r["metrics_time_s"]["evaluate_pair"] > 0
    for e in r["sizes"]:  # the default Fuser's costs as ratios to its own forward pass
        fz = e["fuser"]
        assert fz["path"] == "fast" and fz["forward"]["ratio"] == 1.0
        steps = {"set_pair", "intervene: complementary", "intervene: random", "intervene: drop-visible",
                 "intervene: drop-infrared"}
        assert steps <= set(fz) and all(fz[n]["ratio"] > 0 and fz[n]["median_s"] > 0 for n in steps)


@pytest.mark.slow  # times training steps
def test_bench_train_times_each_precision_and_layout_and_names_the_cpu(tmp_path, shared_dir, capsys):
    from ivfusion.cli import main
    from ivfusion.device import bf16_native

    out = tmp_path / "train.json"
    rc = main(["bench", "--train", "--train-crop", "32", "--train-batch", "2", "--runs", "1", "--warmup", "0",
               "--threads", "1", "--pairs", str(shared_dir / "data" / "msrs" / "train"), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "crop 32, batch 2" in text and "bf16 native" in text
    r = json.loads(out.read_text())["train"]
    assert r["cpu"] and r["cpu"] != "unknown"
    kinds = [(row["precision"], row["channels_last"]) for row in r["rows"]]
    expected = [("fp32", False), ("fp32", True)] + ([("bf16 autocast", False), ("bf16 autocast", True)]
                                                     if bf16_native() else [])
    assert kinds == expected and all(row["median_s"] > 0 for row in r["rows"])
