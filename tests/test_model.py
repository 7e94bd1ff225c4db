"""The ISFuse network: size, cost, shapes at any size, and fidelity to the authors' forward."""
import math

import pytest
import torch

from ivfusion import ISFuse, ISFuseConfig
from ivfusion.bench import count_macs
from ivfusion.hub import load_official_checkpoint

from .official import authors_forward, synthetic_official_state_dict


def test_parameter_counts_match_the_paper():
    assert ISFuse(ISFuseConfig(with_unused=True)).num_parameters(used_only=False) == 231_780
    assert ISFuse().num_parameters() == 192_388


def test_macs_at_256_match_the_paper():
    x = torch.zeros(1, 1, 256, 256)
    macs = count_macs(ISFuse().eval(), x, x)
    assert 5.9e9 < macs < 6.05e9  # paper: 6.0 G (their "FLOPs" are MACs)


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (33, 47), (64, 64), (75, 123)])
def test_any_size_works_with_floored_gate_sizes(untrained, size):
    h, w = size
    x = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused, gates = untrained(x, x.flip(-1))
    assert fused.shape == (2, 1, h, w)
    assert [g.shape[-2:] for g in gates] == [(h // 2 // 2, w // 2 // 2), (h // 2, w // 2), (h, w)]
    for t in (fused, *gates):
        assert 0.0 <= t.min() and t.max() <= 1.0


@pytest.mark.parametrize("size", [(3, 3), (2, 64), (64, 1)])
def test_too_small_inputs_get_a_clear_error(untrained, size):
    x = torch.rand(1, 1, *size)
    with pytest.raises(ValueError, match="at least 4x4"):
        untrained(x, x)


def test_wrong_input_shapes_get_a_clear_error(untrained):
    with pytest.raises(ValueError, match="same shape"):
        untrained(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        untrained(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_batch_items_are_independent_in_eval(untrained):
    g = torch.Generator().manual_seed(1)
    vis, ir = torch.rand(3, 1, 24, 40, generator=g), torch.rand(3, 1, 24, 40, generator=g)
    with torch.no_grad():
        batched, _ = untrained(vis, ir)
        single, _ = untrained(vis[1:2], ir[1:2])
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=0)


def test_shared_encoder_is_one_module():
    m = ISFuse(ISFuseConfig(shared_encoder=True))
    assert m.encoder_vi is m.encoder_ir
    assert m.num_parameters() == 192_388 - 46_944  # one encoder of 46,944 fewer


def test_attention_sees_only_the_pooled_keys_and_values():
    """Visible queries see the infrared features only through their r x r average pooling:
    a change of f_ir with zero mean in every pooling cell leaves that direction unchanged,
    a change with non-zero cell means does not."""
    torch.manual_seed(0)
    att = ISFuse().eval().cfis[0].attention  # r = 8
    f_vi, f_ir = torch.rand(1, 32, 16, 24), torch.rand(1, 32, 16, 24)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 12)  # 2x2 cells (16/8, 24/8), zero mean each
    direction = lambda f: att._attend(att.q_vi(f_vi), att.k_ir(f), att.v_ir(f))
    with torch.no_grad():
        base = direction(f_ir)
        same = direction(f_ir + 0.5 * checker)
        moved = direction(f_ir + 0.5 * checker.abs())
        cross = att(f_vi, f_ir)
    assert (same - base).abs().max() < 1e-5
    assert (moved - base).abs().max() > 1e-3
    assert cross.shape == f_vi.shape


def test_cfi_output_and_gate_range():
    m = ISFuse().eval()
    f_vi, f_ir = torch.rand(1, 32, 9, 13), torch.rand(1, 32, 9, 13)
    with torch.no_grad():
        fused, g = m.cfis[0](f_vi, f_ir)
        fused2, g2, cross = m.cfis[0].forward_with_cross(f_vi, f_ir)
        expected_cross = m.cfis[0].attention(f_vi, f_ir)
    assert fused.shape == f_vi.shape and g.shape == (1, 1, 9, 13)
    assert 0 < g.min() and g.max() < 1
    assert torch.equal(fused, fused2) and torch.equal(g, g2) and torch.equal(cross, expected_cross)


def test_encode_then_fuse_features_is_forward(untrained):
    x = torch.rand(2, 1, 37, 51, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fused, gates = untrained(x, x.flip(-1))
        f_vi, f_ir = untrained.encode(x, x.flip(-1))
        fused2, gates2, cross = untrained.fuse_features(f_vi, f_ir, return_cross=True)
    assert [f.shape[-2:] for f in f_vi] == [(37, 51), (18, 25), (9, 12)]
    assert torch.equal(fused, fused2) and all(torch.equal(a, b) for a, b in zip(gates, gates2))
    assert [c.shape for c in cross] == [(2, 32, 9, 12), (2, 32, 18, 25), (2, 32, 37, 51)]
    # the split adds no parameters: checkpoint keys are the encoders', CFIs' and decoder's only
    assert {k.split(".")[0] for k in untrained.state_dict()} == {"encoder_vi", "encoder_ir", "cfis", "decoder"}
    assert not any(".mix." in k for k in untrained.state_dict())


def test_encoder_geometry_matches_a_brute_force_probe(untrained):
    """reencode's locality figures, derived from the Encoder's description, against the
    farthest feature change that flipping one input pixel actually causes."""
    from ivfusion.reencode import Geometry

    geo = Geometry.of(untrained.encoder_vi)
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    reach = 0
    with torch.no_grad():
        clean = untrained.encoder_vi(x)
        for p in range(28, 36):  # every position on the 4-pixel pooling grid, twice
            xi = x.clone()
            xi[..., p, p] += 5
            for level, (a, b) in enumerate(zip(clean, untrained.encoder_vi(xi))):
                ys = torch.nonzero((a - b).abs().amax(1)[0] > 0)[:, 0]
                s = 2 ** level
                reach = max(reach, p - int(ys.min()) * s, int(ys.max()) * s + s - 1 - p)
    assert geo.influence == reach
    assert geo.align == 4 and geo.margin % geo.align == 0


def test_reencode_from_crops_equals_a_full_encode(untrained):
    from ivfusion.reencode import Geometry, reencode

    geo = Geometry.of(untrained.encoder_ir)
    x = torch.rand(1, 1, 203, 250, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        clean = untrained.encoder_ir(x)
        for box in [(0, 9, 0, 11), (190, 203, 240, 250), (97, 120, 101, 131)]:  # corners and the middle
            changed = torch.zeros(203, 250, dtype=torch.bool)
            changed[box[0]:box[1], box[2]:box[3]] = True
            xi = torch.where(changed, 0.0, x)
            feats, how = reencode(untrained.encoder_ir, xi, clean, changed.numpy(), geo)
            full = untrained.encoder_ir(xi)
            assert how == "local"
            for a, b in zip(feats, full):
                assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max())


@pytest.mark.parametrize("size", [(48, 64), (37, 51), (75, 99)])
def test_matches_an_independent_authors_style_forward(tmp_path, size):
    """A checkpoint in the authors' key layout gives the same output through load_model as
    a functional forward written directly against those keys (tests/official.py)."""
    sd = synthetic_official_state_dict(seed=3)
    path = tmp_path / "best.pth"
    torch.save(sd, path)
    model = load_official_checkpoint(path).eval()
    g = torch.Generator().manual_seed(4)
    vis, ir = torch.rand(1, 1, *size, generator=g), torch.rand(1, 1, *size, generator=g)
    with torch.no_grad():
        ours, our_gates = model(vis, ir)
        theirs, their_gates = authors_forward(sd, vis, ir)
    assert (ours - theirs).abs().max() < 1e-5
    for a, b in zip(our_gates, their_gates):
        assert (a - b).abs().max() < 1e-5
    assert not math.isclose(float(ours.std()), 0.0)  # a non-trivial output was compared


@pytest.mark.slow  # the authors' full-size forward on real pairs
def test_the_authors_released_checkpoint_matches_their_forward_on_real_pairs(shared_dir):
    """The real best.pth through load_model (reference and fast paths, the Fuser's input
    conversion) against the functional forward written on the authors' key names, on real
    pairs at native size, odd sizes included. The first check a reader of the checkpoint
    wants: our modules compute what their weights were trained to compute."""
    from ivfusion import Fuser
    from ivfusion.data import find_pairs, load_pair

    best = shared_dir / "weights" / "authors" / "best.pth"
    assert best.is_file(), f"the authors' checkpoint is missing: {best}"
    sd = torch.load(best, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    pairs = [p for p in find_pairs(shared_dir / "data" / "roadscene" / "test") if p[0] in ("FLIR_00211", "FLIR_04269")]
    assert len(pairs) == 2
    for path in ("reference", "fast"):
        fuser = Fuser(str(best), device="cpu", path=path)
        for stem, ir_path, vi_path in pairs:
            y, ir = load_pair(ir_path, vi_path)
            vis_t, ir_t = torch.from_numpy(y)[None, None], torch.from_numpy(ir)[None, None]
            with torch.no_grad():
                theirs, their_gates = authors_forward(sd, vis_t, ir_t)
            ours, our_gates = fuser.run(vis_t, ir_t)
            assert (ours - theirs).abs().max() < 1 / 255 / 10, (path, stem)
            for a, b in zip(our_gates, their_gates):
                assert (a - b).abs().max() < 1e-4, (path, stem)
            assert float(theirs.std()) > 0.05  # a real image, not a flat output
