"""The A/B decision of tools/v4_ab.py applies the protocol's rule (docs/research/v4/protocol.json)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("v4_ab", ROOT / "tools" / "v4_ab.py")
v4_ab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(v4_ab)


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
