"""`ivfusion export --onnx`: the graph written by the command, run by onnxruntime, against the
PyTorch forward on held-out real pairs; the matrix form of adaptive pooling; the refusal to
write a graph that fails its check."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ivfusion import Fuser, load_model
from ivfusion import export as ex


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (7, 8), (8, 8), (9, 17), (75, 131), (120, 160)])
def test_matrix_pooling_equals_adaptive_average_pooling(size):
    x = torch.rand(2, 3, *size)
    got = ex.adaptive_pool(x, 8)
    assert got.shape == (2, 3, 8, 8)
    torch.testing.assert_close(got, F.adaptive_avg_pool2d(x, 8), rtol=0, atol=1e-6)


def test_the_exported_module_is_the_masked_forward(untrained, pairs):
    name, vis, ir = pairs[0]
    fuser = Fuser(untrained, path="reference", max_side=96)
    fuser.set_pair(vis, ir)
    y, i = (torch.from_numpy(a)[None, None] for a in (fuser.pair.visible_y, fuser.pair.infrared))
    m_vi, m_ir = (torch.from_numpy(m)[None, None] for m in fuser.sample_masks("complementary", seed=3)[0])
    with torch.inference_mode():
        got = ex.ExportGraph(untrained)(y, i, m_vi, m_ir)
        fused, gates = untrained(y * m_vi, i * m_ir)
    for a, b in zip(got, (fused, *gates)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The command as a user runs it, on the bundled weights."""
    out = tmp_path_factory.mktemp("onnx") / "isfuse.onnx"
    res = subprocess.run([sys.executable, "-m", "ivfusion", "export", "--onnx", str(out)], capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    return out, res


@pytest.mark.slow
def test_export_writes_a_graph_that_passed_its_check(exported):
    out, res = exported
    assert out.is_file()
    # the check's table: one row per bundled example, each intervention of the check used
    rows = [line for line in res.stdout.splitlines() if line.startswith(("msrs_", "roadscene_"))]
    assert len(rows) == len(ex.check_pairs()) and not any("FAIL" in r for r in rows)
    assert {kind for kind in ex.CHECK_INTERVENTIONS if any(f" {kind} " in r for r in rows)} == set(ex.CHECK_INTERVENTIONS)
    assert "Traceback" not in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["none", "complementary", "drop-infrared"])
def test_the_written_graph_matches_pytorch_on_held_out_pairs(exported, pairs, kind):
    sess = ex.session(exported[0].read_bytes())
    model = load_model(None)
    fuser = Fuser(model, path="reference")
    for name, vis, ir in pairs[:2]:  # roadscene/test and msrs pairs, not among the bundled examples
        fuser.set_pair(vis, ir)
        res = fuser.intervene(kind, seed=5)
        feeds = dict(zip(ex.INPUT_NAMES, (a[None, None] for a in (fuser.pair.visible_y, fuser.pair.infrared, *res.masks))))
        fused, *gates = sess.run(list(ex.OUTPUT_NAMES), feeds)
        assert np.abs(fused[0, 0] - res.fused_y).max() <= ex.FUSED_BOUND, name
        for g, want in zip(gates, res.gates):
            assert g.shape[2:] == want.shape
            assert np.abs(g[0, 0] - want).max() <= ex.GATE_BOUND, name


@pytest.mark.slow
def test_the_graph_has_dynamic_batch_and_size_and_the_documented_names(exported):
    sess = ex.session(exported[0].read_bytes())
    assert [i.name for i in sess.get_inputs()] == list(ex.INPUT_NAMES)
    assert [o.name for o in sess.get_outputs()] == list(ex.OUTPUT_NAMES)
    x = np.random.default_rng(0).random((3, 1, 37, 53), dtype=np.float32)
    m = (np.random.default_rng(1).random(x.shape) > 0.3).astype(np.float32)
    fused, *gates = sess.run(None, dict(zip(ex.INPUT_NAMES, (x, x[::-1].copy(), m, np.ones_like(m)))))
    assert fused.shape == (3, 1, 37, 53)
    assert [g.shape for g in gates] == [(3, 1, 9, 13), (3, 1, 18, 26), (3, 1, 37, 53)]
    # the batch items are independent: item 1 alone gives the same
    alone = sess.run(None, dict(zip(ex.INPUT_NAMES, (x[1:2], x[1:2], m[1:2], np.ones_like(m[1:2])))))
    assert np.abs(alone[0] - fused[1:2]).max() < 1e-5


@pytest.mark.slow
def test_a_graph_that_fails_its_check_is_not_written(tmp_path, untrained):
    """The graph of the untrained network checked against the trained one: a real deviation."""
    out = tmp_path / "bad.onnx"
    with pytest.raises(ex.ExportCheckError, match="nothing was written"):
        ex.write_checked(ex.to_onnx(untrained), load_model(None), out, pairs=ex.check_pairs(limit=1))
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("args, says", [
    (["--onnx", "model.txt"], "expected a file name ending in .onnx"),
    (["--onnx", "no/such/folder/model.onnx"], "does not exist"),
    (["--onnx", "m.onnx", "--weights", "no-such-weights"], "weights not found"),
    ([], "the following arguments are required: --onnx"),
])
def test_bad_export_arguments_are_one_line(tmp_path, args, says):
    res = subprocess.run([sys.executable, "-m", "ivfusion", "export", *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 2
    assert "ivfusion export: error: " in res.stderr and says in res.stderr
    assert "Traceback" not in res.stderr
