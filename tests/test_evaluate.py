"""ivfusion.evaluate on real RoadScene pairs: scores, table, CSV/JSON/plot, problems, model."""

import csv
import json
import math
import shutil

import cv2
import numpy as np
import pytest

from ivfusion import evaluate as E
from ivfusion.cli import main as ivfusion_cli
from ivfusion.interventions import INTERVENTIONS
from ivfusion.levels import GATE_LEVELS
from ivfusion.metrics import METRIC_NAMES, evaluate_pair, read_grey

pytestmark = pytest.mark.slow  # the whole module is slow: the evaluate command on real folders


def evaluate_cli(argv) -> int:
    """`ivfusion evaluate ARGV`, in this process."""
    return ivfusion_cli(["evaluate", *argv])


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
    monkeypatch.setattr(E.pool, "POOL_MIN_JOBS", 1)  # use the pool even for three pairs
    one = E.evaluate_folders(root / "ir", root / "vi", [root / "avg", root / "max"], workers=1)
    two = E.evaluate_folders(root / "ir", root / "vi", [root / "avg", root / "max"], workers=2)
    assert two.pairs == one.pairs
    for m1, m2 in zip(one.methods, two.methods):
        assert list(m2.scores) == list(m1.scores)  # pair order kept despite as_completed
        assert m2.scores == m1.scores or all(
            math.isnan(m1.scores[s][k]) and math.isnan(m2.scores[s][k]) or
            m1.scores[s][k] == m2.scores[s][k] for s in m1.scores for k in METRIC_NAMES)


def _tables(text):
    """Each Markdown table in text as {first cell: other cells} (body rows), in order."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    out = []
    for lines in blocks:
        assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}, text
        rows = {}
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        out.append(rows)
    return out


def _table_rows(text):
    """Body rows of the first Markdown table in text: {first cell: other cells}."""
    tables = _tables(text)
    assert tables, text
    return tables[0]


def test_cli_table_csv_json_plot(folders, expected, tmp_path, capsys):
    root, arrays = folders
    out_csv, out_json, out_png = tmp_path / "s.csv", tmp_path / "s.json", tmp_path / "s.png"
    rc = evaluate_cli(["--infrared", str(root / "ir"), "--visible", str(root / "vi"),
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
    rc = evaluate_cli(["--infrared", str(root / "ir"), "--visible", str(root / "vi"), "--fused", str(partial),
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
    code = evaluate_cli(["--infrared", str(root / "ir"), "--visible", str(root / "vi"), "--fused", str(root / "max"),
                   "--baseline", "mean", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "| max | 3 |" in out and "| (IR+VI)/2 | 3 |" in out


def test_usage_errors(folders, tmp_path, capsys):
    root, _ = folders
    base = ["--infrared", str(root / "ir"), "--visible", str(root / "vi"), "--no-progress"]
    assert evaluate_cli(base) == 2
    assert evaluate_cli(base + ["--fused", str(root / "avg"), "--names", "x,y"]) == 2
    assert evaluate_cli(base + ["--fused", str(tmp_path / "nope")]) == 2
    assert evaluate_cli(base + ["--fused", str(root / "avg"), "--interventions"]) == 2
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in (root / "vi").iterdir():
        shutil.copy(p, renamed / f"v_{p.name}")
    assert evaluate_cli(["--infrared", str(root / "ir"), "--visible", str(renamed), "--baseline", "mean",
                   "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no pairs found: the file names" in err and "differ" in err and f"v_{STEMS[0]}.jpg" in err
    assert "--names gives 2 names for 1 --fused folders" in err
    assert "fused folder not found" in err
    assert "--interventions needs exactly one --weights" in err


def test_add_parser_registers_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog="ivfusion")
    sub = parser.add_subparsers(dest="command")
    E.add_parser(sub)
    args = parser.parse_args(["evaluate", "--infrared", "i", "--visible", "v", "--fused", "a",
                              "--fused", "b", "--workers", "3"])
    assert args.func is E.run and args.fused == ["a", "b"] and args.workers == 3
    assert (args.infrared, args.visible) == ("i", "v")


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
    assert E.INTERVENTION_KINDS == ("complementary", "random", "drop-visible", "drop-infrared")
    for kind in E.INTERVENTION_KINDS:
        g = rep.gate_means[kind]
        assert list(g) == [lv.key for lv in GATE_LEVELS] and all(0.0 <= x <= 1.0 for x in g.values())
        for k in METRIC_NAMES:
            c = rep.means["none"][k]
            if math.isfinite(c) and c != 0 and math.isfinite(rep.means[kind][k]):
                assert rel[kind][k] == pytest.approx((rep.means[kind][k] - c) / abs(c))
    table = E.interventions_table(rep)
    rows = _table_rows(table)
    assert list(rows) == ["none (clean)"] + [INTERVENTIONS[k].label for k in E.INTERVENTION_KINDS]
    assert "coarse gate mean" in table and "eta = 0.3" in table


def test_cli_weights_with_fused_folder(crops, one_torch_thread, tmp_path, capsys):
    avg = tmp_path / "avg"
    avg.mkdir()
    for stem in STEMS[:2]:
        a, b = read_grey(crops / "ir" / f"{stem}.png"), read_grey(crops / "vi" / f"{stem}.png")
        _write_grey_png(avg / f"{stem}.png", np.round((a + b) / 2))
    out_json = tmp_path / "m.json"
    rc = evaluate_cli(["--infrared", str(crops / "ir"), "--visible", str(crops / "vi"), "--fused", str(avg),
                 "--weights", "untrained", "--device", "cpu", "--json", str(out_json),
                 "--workers", "1", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    metrics, gates = _tables(out)
    assert set(metrics) == {"avg", E.MODEL_METHOD}
    assert list(gates) == [E.MODEL_METHOD]  # the gate table: ISFuse runs only
    data = json.loads(out_json.read_text())
    m = data["methods"][E.MODEL_METHOD]
    assert "untrained" in m["source"] and m["eta"] == pytest.approx(0.3)
    assert "gates" not in data["methods"]["avg"]
    # the printed gate means are the JSON's, which average the per-pair values
    header = [ln for ln in out.splitlines() if ln.startswith("| weights")][0]
    cols = [c.strip() for c in header.strip("|").split("|")][1:]
    assert cols[:2] == ["images", "eta"] and gates[E.MODEL_METHOD][:2] == ["2", "0.30"]
    for lv in GATE_LEVELS:
        for stat, label in (("mean", "mean"), ("std", "std"), ("p1_p99", "p1-p99")):
            per_pair = [m["gates"]["images"][s][lv.key][stat] for s in STEMS[:2]]
            assert m["gates"]["mean"][lv.key][stat] == pytest.approx(np.mean(per_pair), rel=1e-12)
            cell = gates[E.MODEL_METHOD][cols.index(f"{lv.key} {label}")]
            assert cell == f"{np.mean(per_pair):.3f}"


def test_gate_diagnostics_are_the_gate_maps_statistics(crops, one_torch_thread):
    """Per pair and level: the mean, spatial std and p99 - p1 of the gate map the Fuser returns."""
    from ivfusion import Fuser
    from ivfusion.io import read_image

    res = E.evaluate_model(crops / "ir", crops / "vi", "untrained", device="cpu", workers=1)
    fuser = Fuser("untrained", device="cpu", max_side=None)
    m = res.method(E.MODEL_METHOD)
    assert list(m.gates) == list(STEMS[:2])
    for stem in STEMS[:2]:
        clean = fuser.fuse(read_image(crops / "vi" / f"{stem}.png"), read_image(crops / "ir" / f"{stem}.png"))
        for lv in GATE_LEVELS:
            g = clean.gates[lv.index].astype(np.float64)
            got = m.gates[stem][lv.key]
            assert got["mean"] == pytest.approx(g.mean(), rel=1e-9)
            assert got["std"] == pytest.approx(g.std(), rel=1e-9) and got["std"] > 0
            assert got["p1_p99"] == pytest.approx(np.percentile(g, 99) - np.percentile(g, 1), rel=1e-9)
    # CSV: gate columns for the model's rows
    rows = list(csv.DictReader(res.csv_text().splitlines()))
    assert [k for k in rows[0] if k.startswith("gate_")][:3] == ["gate_coarse_mean", "gate_coarse_std",
                                                                  "gate_coarse_p1_p99"]
    assert float(rows[0]["gate_fine_std"]) == m.gates[rows[0]["image"]]["fine"]["std"]


def test_authors_checkpoint_is_one_of_the_specs(crops, one_torch_thread, shared_dir, capsys):
    best = shared_dir / "weights" / "authors" / "best.pth"
    assert best.is_file(), f"the authors' checkpoint is missing: {best}"
    rc = evaluate_cli(["--infrared", str(crops / "ir"), "--visible", str(crops / "vi"), "--weights", "untrained",
                 "--weights", str(best), "--device", "cpu", "--workers", "1", "--no-progress"])
    assert rc == 0
    metrics, gates = _tables(capsys.readouterr().out)
    names = [f"{E.MODEL_METHOD} [untrained]", f"{E.MODEL_METHOD} [{best}]"]
    assert list(metrics) == names and list(gates) == names
    assert gates[names[0]] != gates[names[1]]  # two different networks, two different gate maps


def _png(path, array):
    assert cv2.imwrite(str(path), array)


def test_bad_pairs_are_named_and_the_rest_is_scored(crops, one_torch_thread, tmp_path, capsys):
    """Flat, black, tiny, corrupt, truncated and mis-sized pairs beside two good ones: the good
    ones are scored by every method, each bad one is named with its reason, exit 1."""
    root = tmp_path / "data"
    shutil.copytree(crops, root)
    avg = root / "avg"
    avg.mkdir()
    for stem in STEMS[:2]:
        a, b = read_grey(root / "ir" / f"{stem}.png"), read_grey(root / "vi" / f"{stem}.png")
        _write_grey_png(avg / f"{stem}.png", np.round((a + b) / 2))
    bad = {
        "black": (np.zeros((64, 96), np.uint8), np.zeros((64, 96, 3), np.uint8)),
        "flat": (np.full((64, 96), 77, np.uint8), np.full((64, 96, 3), 140, np.uint8)),
        "tiny": (np.full((1, 1), 10, np.uint8), np.full((1, 1, 3), 200, np.uint8)),
        "sizes": (np.zeros((30, 40), np.uint8), np.zeros((64, 96, 3), np.uint8)),
    }
    for stem, (ir, vi) in bad.items():
        _png(root / "ir" / f"{stem}.png", ir)
        _png(root / "vi" / f"{stem}.png", vi)
        _png(avg / f"{stem}.png", vi[..., 0])
    (root / "ir" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    shutil.copy(root / "vi" / "flat.png", root / "vi" / "corrupt.png")
    rc = evaluate_cli(["--infrared", str(root / "ir"), "--visible", str(root / "vi"), "--fused", str(avg),
                 "--weights", "untrained", "--baseline", "mean", "--device", "cpu", "--workers", "1",
                 "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err
    metrics = _table_rows(cap.out)
    assert set(metrics) == {"avg", E.MODEL_METHOD, "(IR+VI)/2"}
    # black and flat images have defined metric values: scored, with NaN where undefined
    assert all(row[0] == "4" for row in metrics.values()), metrics
    assert "VIF is undefined (NaN)" in cap.out
    problems = cap.err[cap.err.index("problem(s)"):]
    assert "pair corrupt: cannot use the sources:" in problems and "not a readable image" in problems
    assert "pair sizes: cannot use the sources:" in problems and "40x30" in problems
    # a 1x1 pair: the metrics are defined, the network cannot run on it; named for ISFuse only
    assert f"{E.MODEL_METHOD}: tiny: fusion failed:" in problems
    assert "avg: tiny" not in problems
