"""The ISFuse network: size, cost, shapes at any size, and fidelity to the authors' forward."""
import math

import pytest
import torch
import torch.nn.functional as F

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


def test_key_cfi_properties():
    """Pooled K/V: the attention sees r*r tokens whatever the size; gate in (0, 1)."""
    m = ISFuse().eval()
    cfi = m.cfis[0]
    f_vi, f_ir = torch.rand(1, 32, 9, 13), torch.rand(1, 32, 9, 13)
    with torch.no_grad():
        k = F.adaptive_avg_pool2d(cfi.attention.k_ir(f_ir), 8)
        fused, g = cfi(f_vi, f_ir)
    assert k.shape[-2:] == (8, 8)
    assert fused.shape == f_vi.shape and g.shape == (1, 1, 9, 13)


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
