"""The A/B decision of tools/v4_ab.py applies the protocol's rule (docs/research/v4/protocol.json)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    """A script of tools/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


v4_ab, v4_run = _tool("v4_ab"), _tool("v4_run")


def _arm(out: Path, name: str, step: int, held: tuple, test: tuple) -> None:
    """A run folder whose log ends with one validation record: held = (>= darker, Qabf, VIF),
    test = (Qabf, VIF)."""
    run = v4_ab.folder(out, name)
    run.mkdir(parents=True)
    val = {v4_ab.HELD_OUT: dict(zip(("val_above_darker", "val_Qabf", "val_VIF"), held)),
           v4_ab.TEST: dict(zip(("val_Qabf", "val_VIF"), test))}
    records = [{"step": step - 10, "loss": 0.3}, {"step": step, "val": val}]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_each_arm_is_read_against_the_one_before_it(tmp_path, capsys):
    _arm(tmp_path, "v3", 400, (1, 0.10, 0.20), (0.40, 0.40))
    _arm(tmp_path, "+quota", 400, (5, 0.10, 0.20), (0.39, 0.40))  # more pairs >= darker, costs 0.01: kept
    _arm(tmp_path, "+exposure", 400, (5, 0.15, 0.20), (0.35, 0.40))  # Qabf up, but test Qabf -0.04: dropped
    _arm(tmp_path, "+zoom", 400, (5, 0.15, 0.20), (0.36, 0.41))  # raises nothing held out: dropped
    _arm(tmp_path, "+flat", 400, (5, 0.15, 0.25), (0.36, 0.395))  # VIF up, test VIF -0.015: kept
    flags = v4_ab.decide(tmp_path, 400)
    assert flags == v4_ab.ARMS["+quota"] + v4_ab.ARMS["+flat"]
    said = capsys.readouterr().out
    assert "+exposure: dropped (raises held-out Qabf; but lowers roadscene/test Qabf 0.390 -> 0.350)" in said
    assert "+zoom: dropped (raises nothing" in said


def test_no_decision_before_every_arm_reaches_its_last_step(tmp_path, capsys):
    for name in v4_ab.ARMS:
        _arm(tmp_path, name, 400 if name != "+zoom" else 300, (1, 0.1, 0.2), (0.4, 0.4))
    assert v4_ab.decide(tmp_path, 400) is None
    assert "not there: +zoom" in capsys.readouterr().out


def test_v4_and_its_control_differ_only_by_the_interventions(tmp_path, capsys):
    ab = tmp_path / "ab"
    _arm(ab, "v3", 400, (1, 0.10, 0.20), (0.40, 0.40))
    _arm(ab, "+quota", 400, (5, 0.10, 0.20), (0.39, 0.40))  # kept
    for name in ("+exposure", "+zoom", "+flat"):
        _arm(ab, name, 400, (5, 0.10, 0.20), (0.39, 0.40))  # raise nothing: dropped
    assert v4_run.main(["--ab", str(ab), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    v4, control = [line.split() for line in capsys.readouterr().out.splitlines() if " train " in line]
    assert v4[v4.index("--out") + 1].endswith("/runs/v4") and control[control.index("--out") + 1].endswith("/runs/control")

    def without_out(cmd):
        k = cmd.index("--out")
        return cmd[:k] + cmd[k + 2:]

    v4, control = without_out(v4), without_out(control)
    assert control == v4[:v4.index("--steps")] + ["--no-interventions"] + v4[v4.index("--steps"):]
    assert " ".join(v4_ab.ARMS["+quota"]) in " ".join(v4) and "--augment.zoom" not in v4
    assert v4[v4.index("--steps") + 1] == "3400" and "--resume" not in v4
    (tmp_path / "runs" / "v4").mkdir(parents=True)
    (tmp_path / "runs" / "v4" / "train_config.json").write_text("{}")
    assert v4_run.main(["--ab", str(ab), "--out", str(tmp_path / "runs"), "--which", "v4", "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[-1] == "--resume"  # a started run resumes


def test_no_full_run_starts_before_the_ab_decision(tmp_path, capsys):
    _arm(tmp_path / "ab", "v3", 400, (1, 0.10, 0.20), (0.40, 0.40))
    assert v4_run.main(["--ab", str(tmp_path / "ab"), "--out", str(tmp_path / "runs"), "--dry-run"]) == 2
