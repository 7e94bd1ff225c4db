"""Training: Algorithm 1 by hand on one step, the loss falling on real pairs, outputs of a short
run, exact resume after a kill, a 2-process torchrun, the config and its one-line errors."""
import argparse
import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ivfusion.config import ISFuseConfig
from ivfusion.interventions import MaskConfig
from ivfusion.modeling import ISFuse
from ivfusion.train import TrainConfig, config_from_args, main
from ivfusion.train.config import ConfigError, add_arguments
from ivfusion.train.dataset import PairDataset
from tests.helpers import SHARED

pytestmark = pytest.mark.slow  # the whole module is slow: training runs and subprocesses

TINY = ["--crop", "48", "--batch-size", "4", "--val-pairs", "1", "--log-every", "1", "--threads", "1",
        "--lr", "1e-3", "--lr-schedule", "cosine", "--warmup", "2", "--workers", "1"]


def train_cmd(data, out, steps, *extra):
    # validation on a folder the run does not train on (a training folder gives only its held-out pairs)
    val = SHARED / "data" / "roadscene" / "test"
    return [sys.executable, "-m", "ivfusion", "train", "--data", str(data), "--val", str(val), "--out", str(out),
            "--steps", str(steps), *TINY, *extra]


def test_short_run_writes_checkpoints_logs_and_plot(pair_folder, tmp_path):
    out = tmp_path / "run"
    res = subprocess.run(train_cmd(pair_folder, out, 3, "--val-every", "2", "--init", "untrained"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for name in ("last/model.safetensors", "last/config.json", "best/model.safetensors", "resume.pt",
                 "log.jsonl", "curves.png", "train_config.json", "summary.json"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    val = [r for r in log if "val_L_f" in r]
    assert [r["step"] for r in val] == [2, 3] and {"val_Qabf", "val_SSIM", "val_VIF", "val_MI"} <= set(val[0])
    state = torch.load(out / "resume.pt", weights_only=True)  # loadable safely
    assert state["step"] == 3
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["crop"] == 48 and saved["init"] == "untrained"


# `ivfusion train ...` that SIGKILLs its own process group as its 6th training step begins
KILLED_AT_STEP_6 = """
import os, signal, sys
import ivfusion.train.loop as loop
from ivfusion.cli import main
real, calls = loop.train_step, [0]
def step(*a, **k):
    calls[0] += 1
    if calls[0] == 6:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return real(*a, **k)
loop.train_step = step
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_kill_continues_the_same_run(pair_folder, tmp_path):
    steps = 8
    ref = tmp_path / "uninterrupted"
    res = subprocess.run(train_cmd(pair_folder, ref, steps, "--val-every", "2"), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr

    run = tmp_path / "killed"
    # the run kills itself (SIGKILL, its DataLoader worker too) as its 6th step begins: an event
    # of the run, not a moment of the clock, so it can never finish first. The state on disk is
    # then step 4's, and the log holds step 5, which the resumed run must drop and redo.
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_6, *train_cmd(pair_folder, run, steps,
                                                                             "--val-every", "2")[3:]],
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "summary.json").exists()
    assert torch.load(run / "resume.pt", weights_only=True)["step"] == 4
    assert max(json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()) == 5

    res = subprocess.run([sys.executable, "-m", "ivfusion", "train", "--out", str(run), "--resume"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    a, b = load_file(ref / "last" / "model.safetensors"), load_file(run / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    log_a = [json.loads(x) for x in (ref / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b]  # no lost or doubled steps
    for ra, rb in zip(log_a, log_b):
        if "loss" in ra:
            assert abs(ra["loss"] - rb["loss"]) < 1e-5


def test_torchrun_two_process_gloo(pair_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ivfusion",
           "train", "--data", str(pair_folder), "--val", str(SHARED / "data" / "roadscene" / "test"), "--out", str(out),
           "--steps", "3",
           "--val-every", "3", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]  # rank 0 alone logs
    assert (out / "last" / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


# ---- Algorithm 1 by hand -------------------------------------------------------------------
def _lap_abs(x):
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]]).view(1, 1, 3, 3)
    return F.conv2d(x, k, padding=1).abs()


def _r(g, eta):
    """R(G) = |mean G - eta| - H(G), per image, batch mean (H: mean binary entropy in nats)."""
    p = g.flatten(1).clamp(1e-6, 1 - 1e-6)
    ent = -(p * p.log() + (1 - p) * (1 - p).log()).mean(1)
    return ((p.mean(1) - eta).abs() - ent).mean()


def _algorithm1(model, vis, ir, m_vi, m_ir, m_r, eta=0.3, alpha=0.1, beta=0.05, pooled=False):
    """L of Algorithm 1 written out here, independently of ivfusion.losses and ivfusion.train."""
    z = torch.zeros_like(vis)
    inputs = [(vis, ir), (vis * m_vi, ir * m_ir), (vis * m_r, ir * m_r), (z, ir), (vis, z)]
    if pooled:
        fused, gates = model(torch.cat([a for a, _ in inputs]), torch.cat([b for _, b in inputs]))
        outs = fused.split(vis.shape[0])
        gates = [tuple(g.split(vis.shape[0])[k] for g in gates) for k in range(5)]
    else:  # five separate train-mode forwards: each BatchNorm sees one variant
        runs = [model(a, b) for a, b in inputs]
        outs, gates = [r[0] for r in runs], [r[1] for r in runs]
    f = outs[0]
    l_f = (f - ir).abs().mean() + (f - vis).abs().mean() + (_lap_abs(f) - torch.maximum(_lap_abs(ir), _lap_abs(vis))).abs().mean()
    l_inv = 0
    for d in (1, 2):
        g_bar = sum(F.interpolate(g, size=vis.shape[-2:], mode="bilinear", align_corners=False) for g in gates[d]) / 3
        l_inv = l_inv + ((outs[d] - f).abs() * g_bar).mean() + _r(g_bar, eta)
    l_inv = l_inv / 2
    l_nec = (f - outs[3]).abs().mean() + (f - outs[4]).abs().mean()
    return {"loss": l_f + alpha * l_inv + beta * l_nec, "L_f": l_f, "L_inv": l_inv, "L_nec": l_nec}


def _supplementary_masks(rng, crop: int, side: int = 16):
    """(M_vi, M_ir, M_r) by the supplementary's rule, written here from docs/TRAINING.md, not
    taken from the sampler: per mask a count uniform in 1..6, then for each square a top-left
    corner (row, then column) uniform over the crop; a square that would take the hidden area
    (for M_ir: both complementary masks together) past half the crop, or make M_ir hide a
    pixel M_vi hides, is left out. Drawn complementary first, then random."""
    def squares(hidden):
        mask, union = np.ones((crop, crop), np.float32), hidden.copy()
        for _ in range(int(rng.integers(1, 7))):
            y, x = int(rng.integers(0, crop - side + 1)), int(rng.integers(0, crop - side + 1))
            hole = np.zeros((crop, crop), bool)
            hole[y : y + side, x : x + side] = True
            if not (hole & hidden).any() and (union | hole).sum() <= crop * crop / 2:
                union |= hole
                mask[hole] = 0
        return mask

    none = np.zeros((crop, crop), bool)
    m_vi = squares(none)
    return m_vi, squares(m_vi == 0), squares(none)


def test_one_step_is_algorithm_1_over_five_separate_forwards(pair_folder, tmp_path):
    seed, crop, batch, lr = 3, 32, 2, 1e-3
    # the supplementary's mask rule, whose masks this test draws itself (_supplementary_masks); the
    # default authors-code sampler is checked against its rule in test_interventions.py
    cfg = TrainConfig(data=[str(pair_folder)], val=None, out=str(tmp_path / "run"), crop=crop, batch_size=batch,
                      steps=1, lr=lr, log_every=1, val_every=1, seed=seed, workers=0, threads=1, amp=False,
                      masks=MaskConfig(style="supplementary"))
    main(cfg, echo=lambda *a: None)
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])

    # the same start: the seeded init, the first batch of epoch 0, the documented mask seeds
    torch.manual_seed(seed)
    # in the trainer's memory layout: a dropped modality is an all-zero input, whose encoder
    # BatchNorms normalise a constant map, so rounding (which the layout changes) is amplified
    # by 1/sqrt(eps) there (fp32 against fp64 differ by 0.2 in that pass's output)
    model = ISFuse(ISFuseConfig()).train().to(memory_format=torch.channels_last)
    start = copy.deepcopy(model.state_dict())
    data = PairDataset([str(pair_folder)], crop, seed)
    order = np.random.default_rng([seed, 0]).permutation(len(data))[:batch]
    image = torch.from_numpy(np.stack([data.crop_at(0, int(i)) for i in order]))
    vis, ir = image[:, :1], image[:, 1:]
    masks = [_supplementary_masks(np.random.default_rng([seed, 0, int(i), 1]), crop) for i in order]
    m_vi, m_ir, m_r = (torch.from_numpy(np.stack([m[k] for m in masks]))[:, None] for k in range(3))
    assert (m_vi == 0).any() and (m_r == 0).any()

    terms = _algorithm1(model, vis, ir, m_vi, m_ir, m_r)
    for k in ("loss", "L_f", "L_inv", "L_nec"):
        assert logged[k] == pytest.approx(terms[k].item(), rel=1e-5, abs=1e-6), k
    # the pooled forward gives another loss, so this test tells the two apart
    other = copy.deepcopy(model)
    other.load_state_dict(start)
    pooled = _algorithm1(other, vis, ir, m_vi, m_ir, m_r, pooled=True)["loss"].item()
    assert abs(pooled - logged["loss"]) > 1e-4

    # and the update is one Adam step on that loss
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    opt.zero_grad()
    terms["loss"].backward()
    opt.step()
    saved = load_file(tmp_path / "run" / "last" / "model.safetensors")
    mine = model.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(v, mine[k], rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.equal(start[k], mine[k]) for k in saved if k.endswith("weight"))


def test_loss_falls_over_a_short_run_on_real_pairs(pair_folder, tmp_path):
    # From the untrained network, 40 steps on 4 real pairs: the fusion loss, averaged over the
    # first and the last 8 steps, must fall by more than a third (a network that does not learn
    # keeps it level: the batches are drawn from the same four pairs throughout).
    cfg = TrainConfig(data=[str(pair_folder)], val=None, out=str(tmp_path / "run"), crop=48, batch_size=4,
                      steps=40, lr=1e-3, log_every=1, val_every=40, seed=0, workers=0, threads=1)
    main(cfg, echo=lambda *a: None)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    l_f = [r["L_f"] for r in log if "L_f" in r]
    assert len(l_f) == 40 and all(math.isfinite(x) for x in l_f)
    first, last = np.mean(l_f[:8]), np.mean(l_f[-8:])
    assert last < first * (2 / 3), (first, last)


# ---- data: crops depend on the step, workers change nothing --------------------------------
def test_crops_and_masks_depend_on_the_step_and_workers_change_nothing(pair_folder):
    data = PairDataset([str(pair_folder)], 48, seed=0)
    a, b = data[(0, 1)], data[(1, 1)]
    assert not torch.equal(a["image"], b["image"]) and not torch.equal(a["comp"], b["comp"])
    assert torch.equal(data[(5, 2)]["image"], data[(5, 2)]["image"])
    assert a["image"].shape == (2, 48, 48) and a["comp"].shape == (2, 48, 48) and a["rand"].shape == (1, 48, 48)

    from ivfusion.train.dataset import StepBatchSampler

    def batches(workers):
        sampler = StepBatchSampler(len(data), 2, 0, 1, seed=0, start=0, steps=5)
        loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=workers)
        return [b["image"] for b in loader]

    one, two = batches(0), batches(2)
    assert len(one) == 5 and all(torch.equal(x, y) for x, y in zip(one, two))
    # the two batches of epoch 0 cover four different pairs; epoch 1 draws new crops
    assert not torch.equal(one[0], one[2])


# ---- config and command line ---------------------------------------------------------------
def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return config_from_args(p.parse_args(argv))


def test_defaults_are_the_authors_recipe_and_flags_reach_nested_fields(tmp_path):
    cfg = _parse(["--out", str(tmp_path)])
    assert (cfg.crop, cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.passes) == (256, 16, 1e-4, "constant", "separate")
    assert cfg.masks == MaskConfig(style="authors-code") and cfg.model == ISFuseConfig() and cfg.regulariser == "aggregated"
    cfg = _parse(["--out", str(tmp_path), "--model.r", "4", "--masks.mask-size", "8", "--masks.style", "disjoint",
                  "--masks.disk-prob", "0.5", "--no-amp"])
    assert cfg.model.r == 4 and cfg.masks == MaskConfig(mask_size=8, style="disjoint", disk_prob=0.5)
    for removed in (["--r", "12"], ["--mask-size", "4"], ["--batched-passes"]):  # the 0.1 names are gone
        with pytest.raises(SystemExit):
            _parse(["--out", str(tmp_path), *removed])
    (tmp_path / "c.yaml").write_text("crop: 64\nmodel:\n  r: 4\nmasks:\n  style: disjoint\n")
    cfg = _parse(["--out", str(tmp_path), "--config", str(tmp_path / "c.yaml"), "--crop", "96"])
    assert cfg.crop == 96 and cfg.model.r == 4 and cfg.masks.style == "disjoint"


@pytest.mark.parametrize("flags, message", [
    (["--crop", "0"], "--crop must be a multiple of 4 and >= 16, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--val-every", "0"], "--val-every must be >= 1, got 0"),
    (["--lr-schedule", "linear"], "--lr-schedule 'linear' is unknown; accepted: constant, cosine"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--val", ""], "--val: empty"),
    (["--passes", "three"], "accepted: separate, pooled"),
    (["--regulariser", "none"], "accepted: aggregated, per-level, area-only"),
    (["--masks.style", "square"], "unknown mask style 'square'; accepted: authors-code, disjoint, supplementary"),
    (["--model.r", "0"], "r"),
    (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--device", "gpu0"], "--device: device 'gpu0' is unknown; accepted: auto, cpu, cuda or cuda:N"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--masks.max-holes", "100000"], "max_holes must be at most 128"),
])
def test_bad_settings_are_one_line_errors(flags, message, capsys, tmp_path):
    from ivfusion.cli import main as cli

    rc = cli(["train", "--out", str(tmp_path / "x"), "--val", "none", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert err.startswith("ivfusion train: error: ") and err.count("\n") == 1


def test_resume_without_its_log_is_a_one_line_error(pair_folder, tmp_path, capsys):
    from ivfusion.cli import main as cli

    out = tmp_path / "run"
    main(TrainConfig(data=[str(pair_folder)], val=None, out=str(out), crop=32, batch_size=2, steps=1, workers=0,
                     threads=1), echo=lambda *a: None)
    (out / "log.jsonl").unlink()
    capsys.readouterr()
    rc = cli(["train", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "log.jsonl is missing" in err and "Traceback" not in err and err.count("\n") == 1


def test_training_imports_no_inference_code():
    code = "import sys, ivfusion.train.loop; print(sorted(m for m in sys.modules if m.startswith('ivfusion')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ivfusion.train" in out and "predictor" not in out and "ivfusion.fast" not in out and "lab" not in out


def test_held_out_pairs_stay_out_of_training_and_unknown_names_are_errors(pair_folder, tmp_path):
    from ivfusion.data import find_pairs

    stems = [stem for stem, _, _ in find_pairs(pair_folder)]
    data = PairDataset([str(pair_folder)], 32, holdout=stems[:1])
    assert [n.rsplit("/", 1)[1] for n in data.held_out] == stems[:1]
    assert stems[0] not in {name.rsplit("/", 1)[1] for _, name in data.items} and len(data) == len(stems) - 1
    with pytest.raises(ConfigError, match="no pair named nosuchpair"):
        main(TrainConfig(data=[str(pair_folder)], val=None, out=str(tmp_path / "r"), crop=32, batch_size=1, steps=1,
                         threads=1, holdout=["nosuchpair"]), echo=lambda *a: None)


def test_resume_tolerates_a_log_line_torn_by_a_kill_and_refuses_a_folder_without_a_run(pair_folder, tmp_path):
    out = tmp_path / "run"
    cfg = dict(data=[str(pair_folder)], val=None, out=str(out), crop=32, batch_size=2, log_every=1, val_every=2,
               threads=1)
    main(TrainConfig(steps=2, **cfg), echo=lambda *a: None)
    with open(out / "log.jsonl", "a") as fh:
        fh.write('{"step": 3, "loss": 0.5')  # what a kill in the middle of a write leaves
    main(TrainConfig(steps=3, resume=True, **cfg), echo=lambda *a: None)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    with pytest.raises(ConfigError, match="holds no run"):
        main(TrainConfig(steps=1, resume=True, **{**cfg, "out": str(tmp_path / "empty")}), echo=lambda *a: None)


@pytest.mark.parametrize("content, suffix, message", [
    ("a: [", ".yaml", "not readable YAML"), ("- 1", ".yaml", "expected a mapping"),
    ("model: 5", ".yaml", "'model' must be a mapping"), ("xx", ".json", "not readable JSON"),
    ("holdout:\n  - [a, b]\n", ".yaml", "--holdout: give pair names (file stems), got [['a', 'b']]")])
def test_bad_config_files_are_one_line_errors(content, suffix, message, tmp_path, capsys):
    from ivfusion.cli import main as cli

    path = tmp_path / f"c{suffix}"
    path.write_text(content)
    rc = cli(["train", "--config", str(path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_training_precision_is_bf16_where_native_unless_set():
    from ivfusion.device import bf16_native
    from ivfusion.train.loop import training_precision

    cpu = torch.device("cpu")
    assert training_precision(TrainConfig(), cpu) == bf16_native()
    assert training_precision(TrainConfig(amp=False), cpu) is False
    assert training_precision(TrainConfig(amp=True), cpu) is True


# ---- resuming: what may change, and a state that cannot continue (issue 25) ---------------
def _one_step_run(pair_folder, out, **kw):
    lines = []
    main(TrainConfig(data=[str(pair_folder)], val=None, out=str(out), crop=32, batch_size=2, steps=1, val_every=1,
                     threads=1, **kw), echo=lines.append)
    return lines


def test_a_resumed_run_refuses_a_changed_setting_and_takes_the_safe_ones(pair_folder, tmp_path, capsys):
    from ivfusion.cli import main as cli

    out = tmp_path / "run"
    _one_step_run(pair_folder, out)
    capsys.readouterr()  # its progress bar
    saved = (out / "train_config.json").read_bytes()
    (tmp_path / "c.yaml").write_text("masks:\n  max_holes: 3\n")
    for flags, name, was, asked in [(["--crop", "36"], "--crop", "32", "36"),
                                    (["--model.dim", "16"], "--model.dim", "32", "16"),
                                    (["--config", str(tmp_path / "c.yaml")], "--masks.max-holes", "6", "3")]:
        assert cli(["train", "--out", str(out), "--resume", *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ivfusion train: error: --resume: {name} is {was} in the run being resumed") and \
            f"asked {asked};" in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert (out / "train_config.json").read_bytes() == saved  # refused before anything is written
    # the same value again, and the settings a resumed run may change, are taken
    assert cli(["train", "--out", str(out), "--resume", "--crop", "32", "--steps", "2", "--threads", "1",
                "--log-every", "1"]) == 0
    capsys.readouterr()
    config = json.loads((out / "train_config.json").read_text())
    assert (config["steps"], config["crop"], config["log_every"]) == (2, 32, 1)
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == 2


def test_a_resume_state_that_cannot_continue_is_one_line(pair_folder, tmp_path, capsys):
    from ivfusion.cli import main as cli

    good = tmp_path / "good"
    _one_step_run(pair_folder, good)
    capsys.readouterr()  # its progress bar
    state = torch.load(good / "resume.pt", weights_only=True)

    def truncated(out):
        (out / "resume.pt").write_bytes((good / "resume.pt").read_bytes()[:1000])

    def key_missing(out):
        torch.save({k: v for k, v in state.items() if k != "optimizer"}, out / "resume.pt")

    def other_network(out):  # a config edited by hand: dim 16, the state's weights are dim 32
        config = json.loads((good / "train_config.json").read_text())
        (out / "train_config.json").write_text(json.dumps({**config, "model": {**config["model"], "dim": 16}}))

    def torn_config(out):
        (out / "train_config.json").write_text('{"crop": ')

    for spoil, message in [(truncated, "is not a readable training state"), (key_missing, "lacks optimizer"),
                           (other_network, "size mismatch for"), (torn_config, "is not a readable saved config")]:
        out = tmp_path / spoil.__name__
        shutil.copytree(good, out)
        spoil(out)
        assert cli(["train", "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ivfusion train: error: --resume: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_divergence_names_the_checkpoint_really_on_disk(pair_folder, tmp_path):
    from ivfusion.train import TrainingDiverged

    out = tmp_path / "run"
    cfg = dict(data=[str(pair_folder)], val=None, out=str(out), crop=32, batch_size=2, threads=1, val_every=50)
    with pytest.raises(TrainingDiverged) as diverged:  # diverges long before the first checkpoint
        main(TrainConfig(steps=40, lr=1e30, **cfg), echo=lambda *a: None)
    assert "no checkpoint was written (the first was due at step 40)" in str(diverged.value)
    assert not (out / "resume.pt").exists()

    main(TrainConfig(steps=3, **{**cfg, "val_every": 2}), echo=lambda *a: None)  # checkpoints at steps 2 and 3
    with pytest.raises(TrainingDiverged) as diverged:
        main(TrainConfig(steps=40, lr=1e30, resume=True, **cfg), echo=lambda *a: None)
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == 3
    assert f"the last checkpoint in {out} is from step 3;" in str(diverged.value)


def test_files_without_a_partner_are_named_when_training(pair_folder, tmp_path):
    (pair_folder / "vi" / "lonely.png").write_bytes(next((pair_folder / "vi").glob("*.png")).read_bytes())
    lines = _one_step_run(pair_folder, tmp_path / "run")
    assert (f"{pair_folder}: skipped 1 file(s) with no file of the same name on the other side: lonely.png "
            "(visible only)") in lines
