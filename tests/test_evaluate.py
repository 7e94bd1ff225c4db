"""ivfusion.evaluate on real RoadScene pairs: scores, table, CSV/JSON/plot, problems, model."""

import csv
import json
import math
import shutil

import cv2
import numpy as np
import pytest

from ivfusion import evaluate as E
from ivfusion.metrics import METRIC_NAMES, evaluate_pair, read_grey

STEMS = ("FLIR_00211", "FLIR_00977", "FLIR_04269")


def _write_grey_png(path, grey):
    assert cv2.imwrite(str(path), grey.astype(np.uint8))


@pytest.fixture(scope="module")
def folders(shared_dir, tmp_path_factory):
    """ir/, vi/ (copies of real pairs) and two fused folders: avg = round((IR+VI)/2), max."""
    src = shared_dir / "data" / "roadscene" / "test"
    root = tmp_path_factory.mktemp("eval")
    for sub in ("ir", "vi", "avg", "max"):
        (root / sub).mkdir()
    arrays = {}
    for stem in STEMS:
        shutil.copy(src / "ir" / f"{stem}.jpg", root / "ir")
        shutil.copy(src / "vi" / f"{stem}.jpg", root / "vi")
        a = read_grey(src / "ir" / f"{stem}.jpg")
        b = read_grey(src / "vi" / f"{stem}.jpg")
        fused = {"avg": np.round((a + b) / 2), "max": np.maximum(a, b)}
        for name, f in fused.items():
            _write_grey_png(root / name / f"{stem}.png", f)
        arrays[stem] = (a, b, fused)
    return root, arrays


@pytest.fixture(scope="module")
def expected(folders):
    """evaluate_pair on the in-memory arrays: {(stem, "avg"|"max"): scores}."""
    _, arrays = folders
    return {(stem, k): evaluate_pair(a, b, f) for stem, (a, b, fused) in arrays.items()
            for k, f in fused.items()}


def test_scores_equal_evaluate_pair(folders, expected):
    root, arrays = folders
    res = E.evaluate_folders(root / "ir", root / "vi", [root / "avg", root / "max"], workers=1)
    assert res.pairs == list(STEMS)
    assert [m.name for m in res.methods] == ["avg", "max"]
    assert res.problems == []
    for m in res.methods:
        assert list(m.scores) == list(STEMS)
        for stem in arrays:
            assert list(m.scores[stem]) == list(METRIC_NAMES)
            for k in METRIC_NAMES:
                assert m.scores[stem][k] == expected[stem, m.name][k], (m.name, stem, k)


def test_scores_match_reference_file(folders, shared_dir):
    """The folder evaluation reproduces metrics-reference.json (same pairs, same fusions)."""
    root, _ = folders
    ref = json.loads((shared_dir / "data" / "metrics-reference.json").read_text())
    res = E.evaluate_folders(root / "ir", root / "vi", [root / "avg", root / "max"],
                             names=["mean", "max"], workers=1)
    checked = 0
    for case in ref["cases"]:
        stem = case["ir"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if not case["ir"].startswith("roadscene/test/") or case["fused"] not in ("mean", "max"):
            continue
        got = res.method(case["fused"]).scores[stem]
        for k, v in case["metrics"].items():
            assert got[k] == pytest.approx(v, rel=1e-6), (stem, case["fused"], k)
            checked += 1
    assert checked == 2 * 2 * 11


def test_process_pool_gives_same_results(folders, monkeypatch):
    root, _ = folders
    monkeypatch.setattr(E, "POOL_MIN_JOBS", 1)  # use the pool even for three pairs
    one = E.evaluate_folders(root / "ir", root / "vi", [root / "avg", root / "max"], workers=1)
    two = E.evaluate_folders(root / "ir", root / "vi", [root / "avg", root / "max"], workers=2)
    assert two.pairs == one.pairs
    for m1, m2 in zip(one.methods, two.methods):
        assert list(m2.scores) == list(m1.scores)  # pair order kept despite as_completed
        assert m2.scores == m1.scores or all(
            math.isnan(m1.scores[s][k]) and math.isnan(m2.scores[s][k]) or
            m1.scores[s][k] == m2.scores[s][k] for s in m1.scores for k in METRIC_NAMES)


def _table_rows(text):
    """Body rows of the first Markdown table in text: {first cell: other cells}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert lines and set(lines[1].replace("|", "").split()) <= {"---", "---:"}, text
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_cli_table_csv_json_plot(folders, expected, tmp_path, capsys):
    root, arrays = folders
    out_csv, out_json, out_png = tmp_path / "s.csv", tmp_path / "s.json", tmp_path / "s.png"
    rc = E.main(["--ir", str(root / "ir"), "--vis", str(root / "vi"),
                 "--fused", str(root / "avg"), "--fused", str(root / "max"),
                 "--names", "Average,Maximum", "--csv", str(out_csv), "--json", str(out_json),
                 "--plot", str(out_png), "--workers", "2", "--no-progress"])
    assert rc == 0
    stdout = capsys.readouterr().out

    key = {"Average": "avg", "Maximum": "max"}
    means = {name: {k: np.mean([expected[stem, key[name]][k] for stem in STEMS])
                    for k in METRIC_NAMES} for name in key}
    # table: one row per method, images column, means to 4 decimals, best per column bold
    rows = _table_rows(stdout)
    assert set(rows) == {"Average", "Maximum"}
    for name, cells in rows.items():
        assert cells[0] == str(len(STEMS))
        for k, cell in zip(METRIC_NAMES, cells[1:]):
            assert cell.strip("*") == f"{means[name][k]:.4f}", (name, k)
            best = max(means, key=lambda n: means[n][k])
            assert cell.startswith("**") == (name == best), (name, k, cell)
    # CSV: one row per (method, image), full precision
    with open(out_csv, newline="") as fh:
        recs = list(csv.DictReader(fh))
    assert len(recs) == 2 * len(STEMS)
    assert list(recs[0]) == ["method", "image", *METRIC_NAMES]
    assert {(r["method"], r["image"]) for r in recs} == {(n, s) for n in key for s in STEMS}
    for r in recs:
        for k in METRIC_NAMES:
            assert float(r[k]) == expected[r["image"], key[r["method"]]][k]
    # JSON: means and per-image values
    data = json.loads(out_json.read_text())
    assert data["metrics"] == list(METRIC_NAMES)
    assert data["pairs"] == list(STEMS)
    for name in ("Average", "Maximum"):
        for k in METRIC_NAMES:
            assert data["methods"][name]["mean"][k] == pytest.approx(means[name][k], rel=1e-12)
        assert set(data["methods"][name]["images"]) == set(STEMS)
        assert data["methods"][name]["problems"] == {}
    # plot: a real PNG image
    img = cv2.imread(str(out_png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 600


def test_missing_and_missized_outputs_reported(folders, expected, tmp_path, capsys):
    root, arrays = folders
    partial, bad = tmp_path / "partial", tmp_path / "bad"
    shutil.copytree(root / "avg", partial)
    shutil.copytree(root / "max", bad)
    (partial / f"{STEMS[0]}.png").unlink()
    a = arrays[STEMS[1]][2]["max"]
    _write_grey_png(bad / f"{STEMS[1]}.png", a[:-3, :])
    out_json = tmp_path / "p.json"
    rc = E.main(["--ir", str(root / "ir"), "--vis", str(root / "vi"), "--fused", str(partial),
                 "--fused", str(bad), "--json", str(out_json), "--workers", "1", "--no-progress"])
    assert rc == 1
    cap = capsys.readouterr()
    h, w = a.shape
    assert f"partial: {STEMS[0]}: missing output" in cap.err
    assert f"bad: {STEMS[1]}: output {STEMS[1]}.png is {w}x{h - 3} but the pair is {w}x{h}" in cap.err
    # the rest is still scored; the table compares on the pairs both methods have
    data = json.loads(out_json.read_text())
    assert set(data["methods"]["partial"]["images"]) == {STEMS[1], STEMS[2]}
    assert set(data["methods"]["bad"]["images"]) == {STEMS[0], STEMS[2]}
    assert data["common_pairs"] == [STEMS[2]]
    rows = _table_rows(cap.out)
    assert rows["partial"][0] == "1" and rows["bad"][0] == "1"
    assert rows["partial"][1 + METRIC_NAMES.index("SD")].strip("*") == \
        f"{expected[STEMS[2], 'avg']['SD']:.4f}"
    assert f"left out because some method has no valid output: {STEMS[0]}, {STEMS[1]}" in cap.out


def test_unpaired_source_reported(folders, tmp_path):
    root, _ = folders
    ir = tmp_path / "ir"
    shutil.copytree(root / "ir", ir)
    (ir / "lonely.jpg").write_bytes((ir / f"{STEMS[0]}.jpg").read_bytes())
    res = E.evaluate_folders(ir, root / "vi", root / "avg", workers=1)
    assert res.pairs == list(STEMS)
    assert "lonely" in res.pair_problems and "no visible image" in res.pair_problems["lonely"]


def test_markdown_table_bold_ties_and_nan():
    base = {k: 1.0 for k in METRIC_NAMES}
    means = {"a": dict(base, EN=2.0, SCD=float("nan")), "b": dict(base, EN=1.0, SCD=0.5),
             "c": dict(base, EN=1.99999, SCD=float("nan"))}
    rows = _table_rows(E.markdown_table(means))
    col = {k: i for i, k in enumerate(METRIC_NAMES)}
    # EN: 2.0 (a) and 1.99999 (c) display the same: both bold; b not
    assert [rows[n][col["EN"]] for n in "abc"] == ["**2.0000**", "1.0000", "**2.0000**"]
    # SCD: NaN is never best
    assert [rows[n][col["SCD"]] for n in "abc"] == ["NaN", "**0.5000**", "NaN"]
    # all tied: all bold
    assert all(rows[n][col["CC"]] == "**1.0000**" for n in "abc")
    # a single method: nothing to compare, nothing bold
    single = _table_rows(E.markdown_table({"a": means["a"]}))
    assert not any(c.startswith("**") for c in single["a"])


def test_baselines_equal_the_folder_scores_and_merge_into_one_table(folders, expected, capsys):
    root, arrays = folders
    for kind, name in (("mean", "avg"), ("max", "max")):
        res = E.evaluate_baseline(root / "ir", root / "vi", kind, workers=1)
        for stem in STEMS:
            assert res.methods[0].scores[stem] == expected[stem, name]
    code = E.main(["--ir", str(root / "ir"), "--vis", str(root / "vi"), "--fused", str(root / "max"),
                   "--baseline", "mean", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "| max | 3 |" in out and "| (IR+VI)/2 | 3 |" in out


def test_usage_errors(folders, tmp_path, capsys):
    root, _ = folders
    base = ["--ir", str(root / "ir"), "--vis", str(root / "vi"), "--no-progress"]
    assert E.main(base) == 2
    assert E.main(base + ["--fused", str(root / "avg"), "--names", "x,y"]) == 2
    assert E.main(base + ["--fused", str(tmp_path / "nope")]) == 2
    assert E.main(base + ["--fused", str(root / "avg"), "--interventions"]) == 2
    err = capsys.readouterr().err
    assert "--names gives 2 names for 1 --fused folders" in err
    assert "fused folder not found" in err
    assert "--interventions needs exactly one --weights" in err


def test_add_parser_registers_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog="ivfusion")
    sub = parser.add_subparsers(dest="command")
    E.add_parser(sub)
    args = parser.parse_args(["evaluate", "--ir", "i", "--vis", "v", "--fused", "a",
                              "--fused", "b", "--workers", "3"])
    assert args.func is E.run and args.fused == ["a", "b"] and args.workers == 3


# -- ISFuse itself (--weights): an untrained network keeps this fast and self-contained ----

@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a busy 2-core CI box, torch's spinning threads make these
    tiny forward passes ~10x slower. Restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def crops(shared_dir, tmp_path_factory):
    """Two real pairs cropped to 64 x 96 (keeps the network runs short on CPU)."""
    src = shared_dir / "data" / "roadscene" / "test"
    root = tmp_path_factory.mktemp("crops")
    for sub in ("ir", "vi"):
        (root / sub).mkdir()
        for stem in STEMS[:2]:
            img = cv2.imread(str(src / sub / f"{stem}.jpg"), cv2.IMREAD_UNCHANGED)
            assert cv2.imwrite(str(root / sub / f"{stem}.png"), img[100:164, 150:246])
    return root


def test_model_scores_and_interventions(crops, one_torch_thread):
    from ivfusion import Fuser
    from ivfusion.io import read_image

    res = E.evaluate_model(crops / "ir", crops / "vi", "untrained", interventions=True, seed=5,
                           device="cpu", workers=1)
    fuser = Fuser("untrained", device="cpu", max_side=None)
    m = res.method(E.MODEL_METHOD)
    assert list(m.scores) == list(STEMS[:2]) and m.problems == {}
    rep = res.interventions
    assert list(rep.means) == ["none", *E.INTERVENTION_KINDS]
    assert rep.seeds == {STEMS[0]: 5, STEMS[1]: 6}
    assert rep.eta == pytest.approx(0.3)
    for i, stem in enumerate(STEMS[:2]):
        a, b = read_grey(crops / "ir" / f"{stem}.png"), read_grey(crops / "vi" / f"{stem}.png")
        vis, ir = read_image(crops / "vi" / f"{stem}.png"), read_image(crops / "ir" / f"{stem}.png")
        clean = fuser.fuse(vis, ir)
        assert m.scores[stem] == pytest.approx(evaluate_pair(a, b, clean.fused_rgb), rel=1e-9,
                                               nan_ok=True)
        if i == 1:  # one intervention re-run by hand, with the pair's seed
            drop = fuser.fuse(vis, ir, intervention="random", seed=6)
            assert rep.per_image["random"][stem] == pytest.approx(
                evaluate_pair(a, b, drop.fused_rgb), rel=1e-9, nan_ok=True)
    rel = rep.relative_change()
    for kind in E.INTERVENTION_KINDS:
        g = rep.gate_means[kind]
        assert len(g) == 3 and all(0.0 <= x <= 1.0 for x in g)
        for k in METRIC_NAMES:
            c = rep.means["none"][k]
            if math.isfinite(c) and c != 0 and math.isfinite(rep.means[kind][k]):
                assert rel[kind][k] == pytest.approx((rep.means[kind][k] - c) / abs(c))
    table = E.interventions_table(rep)
    assert len(_table_rows(table)) == 1 + len(E.INTERVENTION_KINDS)
    assert "eta = 0.3" in table


def test_cli_weights_with_fused_folder(crops, one_torch_thread, tmp_path, capsys):
    avg = tmp_path / "avg"
    avg.mkdir()
    for stem in STEMS[:2]:
        a, b = read_grey(crops / "ir" / f"{stem}.png"), read_grey(crops / "vi" / f"{stem}.png")
        _write_grey_png(avg / f"{stem}.png", np.round((a + b) / 2))
    out_json = tmp_path / "m.json"
    rc = E.main(["--ir", str(crops / "ir"), "--vis", str(crops / "vi"), "--fused", str(avg),
                 "--weights", "untrained", "--device", "cpu", "--json", str(out_json),
                 "--workers", "1", "--no-progress"])
    assert rc == 0
    rows = _table_rows(capsys.readouterr().out)
    assert set(rows) == {"avg", E.MODEL_METHOD}
    data = json.loads(out_json.read_text())
    assert "untrained" in data["methods"][E.MODEL_METHOD]["source"]
