"""Training: outputs of a short real run, exact resume after a kill, and a 2-process torchrun."""
import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

TINY = ["--crop", "48", "--batch-size", "4", "--val-pairs", "1", "--log-every", "1", "--threads", "1",
        "--lr", "1e-3", "--lr-schedule", "cosine", "--warmup", "2"]


def train_cmd(data, out, steps, *extra):
    return [sys.executable, "-m", "ivfusion", "train", "--data", str(data), "--val", str(data), "--out", str(out),
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


def test_resume_after_kill_continues_the_same_run(pair_folder, tmp_path):
    steps = 8
    ref = tmp_path / "uninterrupted"
    res = subprocess.run(train_cmd(pair_folder, ref, steps, "--val-every", "2"), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(pair_folder, run, steps, "--val-every", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (run / "resume.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    killed_at = torch.load(run / "resume.pt", weights_only=True)["step"]
    assert 2 <= killed_at < steps

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
           "train", "--data", str(pair_folder), "--val", str(pair_folder), "--out", str(out), "--steps", "3",
           "--val-every", "3", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]  # rank 0 alone logs
    assert (out / "last" / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
