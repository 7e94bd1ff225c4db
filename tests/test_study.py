"""`ivfusion study`: its statistics, its soundness on real maps, and the command end to end."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.stats
import torch

from ivfusion.cli import main
from ivfusion.data import find_pairs, load_pair
from ivfusion.hub import load_model
from ivfusion.levels import GATE_LEVELS
from ivfusion.metrics import pearson
from ivfusion.predictor import Fuser
from ivfusion.stability import modified_t_test
from ivfusion.study import StudySettings, benjamini_hochberg, bootstrap_mean_ci, decide, summarise
from ivfusion.study.measure import IntervenedGate, analyse, weights_key


def test_benjamini_hochberg_agrees_with_scipy_and_skips_nan():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0, 0.01, rng.integers(0, 10))])
        adjusted = scipy.stats.false_discovery_control(p, method="bh")
        np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), adjusted <= 0.05)
    # step-up: 0.04 is rejected at rank 4 (0.04 <= 4/5 * 0.05) and carries the ones below it
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005, 0.5]).tolist() == [True, True, True, True, False]
    with_nan = benjamini_hochberg([0.001, np.nan, 0.02])
    assert with_nan.tolist() == [True, False, True]  # m = 2 defined tests: 0.02 <= 2/2 * 0.05
    with pytest.raises(ValueError, match="q must be in"):
        benjamini_hochberg([0.1], q=0)


def test_bootstrap_interval_is_seeded_covers_the_mean_and_narrows_with_more_pairs():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.2, 0.3, 10), rng.normal(0.2, 0.3, 400)
    m, lo, hi = bootstrap_mean_ci(small, seed=1)
    assert (m, lo, hi) == bootstrap_mean_ci(small, seed=1)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_mean_ci(large, seed=1)
    assert hi2 - lo2 < (hi - lo) / 3
    assert np.isnan(bootstrap_mean_ci([0.3, None, float("nan")])[1])  # one finite value: no interval


def _real_maps(shared_dir, n=10):
    """Clean gates and change maps of n real MSRS pairs (all 640x480, so maps of different
    pairs share a size), under complementary masking with the bundled weights."""
    settings = StudySettings(k=4, max_side=160)
    fuser = Fuser("bundled", max_side=settings.max_side)
    maps = []
    for stem, ir, vi in list(find_pairs(shared_dir / "data" / "msrs" / "train"))[:n]:
        res = analyse(fuser, *load_pair(ir, vi, form="image"), "complementary", settings)
        maps.append({"output": res.instability, "features": [lv.change for lv in res.levels],
                     "gate_full": [fuser.clean.gates_full[lv.level.index] for lv in res.levels],
                     "gate": [lv.gate for lv in res.levels], "stem": stem})
    return maps


def _tests_from(maps, change_of, pair_names):
    """Study test rows correlating each pair's gates with the change maps `change_of(i)` gives."""
    rows = []
    for i, m in enumerate(maps):
        out_map, feat_maps = change_of(i)
        for li, level in enumerate(GATE_LEVELS):
            for measure, x, g in (("output", out_map, m["gate_full"][li]), ("features", feat_maps[li], m["gate"][li])):
                valid = np.isfinite(x) & np.isfinite(g)
                r = float(np.corrcoef(x[valid], g[valid])[0, 1])
                p, n_eff = modified_t_test(x, g)
                rows.append({"dataset": "msrs", "weights": "bundled", "pair": pair_names[i],
                             "intervention": "complementary", "measure": measure, "level": level.key,
                             "r": r, "p": p, "n_eff": n_eff, "n_pixels": int(valid.sum())})
    return rows


@pytest.fixture(scope="module")
def real_maps(shared_dir):
    return _real_maps(shared_dir)


def _other(maps, i):
    """The change maps of a pair far from pair i in the sequence (MSRS numbers neighbouring frames
    of one drive), turned by 180 degrees: street scenes share a layout (sky above, road below) and
    every map has the network's border effects, so an unturned map of another pair is not
    unrelated (the calibration in tools/p_calibration.py does the same)."""
    other = maps[(i + len(maps) // 2) % len(maps)]
    return other["output"][::-1, ::-1], [f[::-1, ::-1] for f in other["features"]]


@pytest.mark.slow  # its real maps take about 25 CPU-seconds
def test_unrelated_maps_are_rejected_at_no_more_than_the_nominal_rate(real_maps):
    n = len(real_maps)
    unrelated = lambda i: _other(real_maps, i)  # noqa: E731
    decided = decide(_tests_from(real_maps, unrelated, [m["stem"] for m in real_maps]), q=0.05)
    rejected = [t for t in decided if t["verdict"] in ("claim", "opposite")]
    assert len(decided) == n * 3 * 2
    assert len(rejected) / len(decided) <= 0.05, [(t["pair"], t["level"], t["measure"], t["r"]) for t in rejected]


@pytest.mark.slow  # its real maps take about 25 CPU-seconds
def test_a_planted_relation_is_found_in_the_claims_direction(real_maps):
    # change = an unrelated real map (spatially correlated noise) minus the pair's own gate, both standardised

    def planted(i):
        z = lambda a: (a - np.nanmean(a)) / np.nanstd(a)  # noqa: E731
        other_out, other_feats = _other(real_maps, i)
        out = z(other_out) - 0.8 * z(real_maps[i]["gate_full"][0])
        feats = [z(f) - 0.8 * z(g) for f, g in zip(other_feats, real_maps[i]["gate"])]
        return out, feats

    decided = decide(_tests_from(real_maps, planted, [m["stem"] for m in real_maps]), q=0.05)
    rows = summarise(decided, n_boot=2000)
    features = [r for r in rows if r["measure"] == "features"]
    assert all(r["ci_high"] < 0 and r["claim_share"] >= 0.9 and r["opposite_share"] == 0 for r in features), features
    coarse_out = next(r for r in rows if r["measure"] == "output" and r["level"] == "coarse")
    assert coarse_out["ci_high"] < 0 and coarse_out["claim_share"] >= 0.9


def test_the_intervened_measure_reads_each_intervened_pass_once(shared_dir):
    # Against passes run one by one with Fuser.intervene (same seeds, so the same masks): per pass,
    # r of each level's intervened gate (upsampled) and of their mean with |F_d - F| over every pixel
    settings = StudySettings(k=3, max_side=96)
    fuser = Fuser("bundled", max_side=settings.max_side)
    stem, ir, vi = next(iter(find_pairs(shared_dir / "data" / "roadscene" / "test")))
    seen = IntervenedGate(fuser)
    analyse(fuser, *load_pair(ir, vi, form="image"), "random", settings, intervened=seen)
    assert {k: len(v) for k, v in seen.r.items()} == {"coarse": 3, "mid": 3, "fine": 3, "mean": 3}
    for run in range(settings.k):
        one = fuser.intervene("random", [settings.seed, run])
        change = np.abs(one.fused_y - fuser.clean.fused_y)
        for lv in GATE_LEVELS:
            assert seen.r[lv.key][run] == pytest.approx(pearson(one.gates_full[lv.index], change), abs=1e-5)
        assert seen.r["mean"][run] == pytest.approx(pearson(one.gates_full.mean(0), change), abs=1e-5)
    rows = seen.tests("random")
    assert [r["level"] for r in rows] == ["coarse", "mid", "fine", "mean"]
    assert rows[3]["r"] == pytest.approx(np.mean(seen.r["mean"]), abs=1e-6) and 0 <= rows[3]["p"] <= 1


def test_the_untrained_null_is_the_same_network_every_time():
    first = weights_key(load_model("untrained"))
    torch.manual_seed(12345)  # the global generator's state does not reach it
    torch.rand(7)
    assert weights_key(load_model("untrained")) == first
    assert weights_key(load_model("bundled")) != first


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # three study runs, about 50 CPU-seconds
def test_study_command_writes_its_outputs_resumes_from_its_cache_and_repeats_itself(shared_dir, tmp_path, capsys):
    data = shared_dir / "data"
    args = [str(data / "roadscene" / "test"), str(data / "msrs" / "train"), "--weights", "bundled", "--weights",
            "untrained", "--k", "2", "--max-side", "96", "--no-progress"]
    out = tmp_path / "a"
    assert main(["study", *args, "--limit", "2", "--out", str(out), "--no-plots"]) == 0
    first = capsys.readouterr().out
    assert "| bundled | complementary | output | coarse |" in first and "(8 computed" in first
    assert "trained minus the untrained null" in first
    for name in ("contrast.csv", "summary.csv", "tests.csv", "study.json", "report.md"):
        assert (out / name).stat().st_size > 0
    summary = _read(out / "summary.csv")
    # datasets x weights x interventions x (output and features at 3 levels, intervened at 3 and their mean)
    assert len(summary) == 2 * 2 * 2 * (2 * 3 + 4)
    assert {r["weights"] for r in summary} == {"bundled", "untrained"}
    contrast = _read(out / "contrast.csv")
    assert len(contrast) == 2 * 2 * (2 * 3 + 4) and {r["weights"] for r in contrast} == {"bundled"}
    assert all(int(r["pairs"]) == 2 for r in contrast)
    tests = {(t["dataset"], t["weights"], t["pair"], t["intervention"], t["measure"], t["level"]): float(t["r"])
             for t in _read(out / "tests.csv") if t["r"]}
    for row in contrast:  # the mean of the per-pair differences with the null, on the same pairs
        key = (row["dataset"], row["intervention"], row["measure"], row["level"])
        d = [r - tests[(key[0], "untrained", p, *key[1:])] for (ds, w, p, *rest), r in tests.items()
             if w == "bundled" and (ds, *rest) == key]
        assert float(row["mean_d"]) == pytest.approx(np.mean(d), abs=1e-9)

    # a killed study resumes: cached pairs are read back, a torn record is measured again
    torn = next((out / "cache").rglob("*.json"))
    torn.write_text('{"size": [')
    assert main(["study", *args, "--limit", "3", "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert "(5 computed" in second and "7 from the cache" in second
    assert (out / "r_distribution.png").stat().st_size > 0 and (out / "extremes_bundled.jpg").stat().st_size > 0

    # the same seed from scratch gives the same numbers and conclusions
    again = tmp_path / "b"
    assert main(["study", *args, "--limit", "3", "--out", str(again), "--no-plots"]) == 0
    capsys.readouterr()
    assert _read(again / "summary.csv") == _read(out / "summary.csv")
    assert _read(again / "tests.csv") == _read(out / "tests.csv")
    assert _read(again / "contrast.csv") == _read(out / "contrast.csv")
    assert json.loads((again / "study.json").read_text())["rows"] == json.loads((out / "study.json").read_text())["rows"]


def test_study_names_bad_input_and_keeps_going_past_a_bad_pair(shared_dir, tmp_path, capsys):
    src = shared_dir / "data" / "msrs" / "train"
    ds = tmp_path / "set"
    for sub in ("ir", "vi"):
        (ds / sub).mkdir(parents=True)
        for p in sorted((src / sub).iterdir())[:2]:
            (ds / sub / p.name).write_bytes(p.read_bytes())
    (ds / "vi" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    (ds / "ir" / "zz.png").write_bytes((src / "ir" / "00001D.png").read_bytes())
    common = ["--k", "2", "--max-side", "96", "--no-progress", "--no-plots", "--out", str(tmp_path / "o")]
    assert main(["study", str(ds), "--weights", "untrained", *common]) == 1  # a pair failed
    out = capsys.readouterr().out
    assert "set/zz with untrained: " in out and "(2 computed" in out and "failed: " in out
    assert main(["study", str(ds), "--weights", str(tmp_path / "nope.safetensors"), *common]) == 2
    assert "weights not found" in capsys.readouterr().err
    assert main(["study", str(tmp_path / "empty"), "--weights", "untrained", *common]) == 2
    assert "expected sub-folders" in capsys.readouterr().err
    assert main(["study", str(ds), "--weights", "untrained", "--k", "1", *common[2:]]) == 2
    assert "k must be" in capsys.readouterr().err
