"""Is the stability analysis's p-value honest? How often it says p < 0.05 (and 0.01) when the
two maps are unrelated, and how often it finds a real dependence.

    python tools/p_calibration.py [--pairs 300] [--authors ../shared/weights/authors/best.pth]

Maps, all at 160x120:
- grey: the infrared and visible images of 40 RoadScene test and 40 MSRS pairs;
- gate: the level-averaged clean gate of the bundled weights (and of the authors' checkpoint
  when it is there) on 12 pairs of each dataset.

Unrelated pairings put one map against a map of another scene turned by 180 degrees, so that
the two do not share the usual layout (sky above, road below). Gate maps of different scenes do
share a pattern along the image border (the network's padding), so gate-against-gate pairings
leave out a 12-pixel border. A test that holds its level rejects about 5% of them at p < 0.05,
and about 1% at p < 0.01. Power: a map against itself plus twice an unrelated map.

The circular-shift test is printed next to the modified t-test the analysis uses, for comparison.

The stability verdict (`--stability N`, default 24 pairs): the analysis is run on N real pairs
at 160x120 (K = MIN_K and 2 x MIN_K complementary maskings, bundled weights), and each pair's
output instability is tested against the gate map of an unrelated scene turned by 180 degrees
with the p-value the Lab uses (spatial modified t plus the K runs resampled). The share of
those unrelated pairings given a verdict (p < 0.05) is the false-verdict rate.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from ivfusion.data import find_pairs, load_pair
from ivfusion.metrics import pearson
from ivfusion.stability import modified_t_test

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = (160, 120)
BORDER = 12


def shift_test(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of r(x, y) against r over every other circular shift of x (FFT sums)."""
    x, y = x - x.mean(), y - y.mean()
    shape = x.shape
    ones = np.ones(shape)
    fy = {k: np.conj(np.fft.rfft2(v)) for k, v in (("1", ones), ("y", y), ("yy", y * y))}
    corr = lambda a, b: np.fft.irfft2(np.fft.rfft2(a) * fy[b], shape)  # noqa: E731
    n = x.size
    sx, sxx, sy, syy, sxy = corr(x, "1"), corr(x * x, "1"), corr(ones, "y"), corr(ones, "yy"), corr(x, "y")
    r = (n * sxy - sx * sy) / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))
    null = r.ravel()[1:]
    return float((1 + np.sum(np.abs(null) >= abs(r[0, 0]) - 1e-12)) / (1 + null.size))


def grey_maps(per_dataset: int) -> list[list[np.ndarray]]:
    out = []
    for name in ("roadscene/test", "msrs/train"):
        for _, ir_path, vi_path in list(find_pairs(DATA / name))[:per_dataset]:
            ir, vis = load_pair(ir_path, vi_path)
            out.append([cv2.resize(a, SIZE, interpolation=cv2.INTER_AREA).astype(np.float64) for a in (ir, vis)])
    return out


def gate_maps(spec: str | None, per_dataset: int) -> list[np.ndarray]:
    from ivfusion import Fuser

    fuser = Fuser(spec, device="cpu", max_side=320)
    out = []
    for name in ("roadscene/test", "msrs/train"):
        for _, ir_path, vi_path in list(find_pairs(DATA / name))[:per_dataset]:
            ir, vis = load_pair(ir_path, vi_path)
            gates = fuser.fuse(vis, ir).gates
            out.append(np.mean([cv2.resize(np.asarray(g, np.float64), SIZE, interpolation=cv2.INTER_LINEAR)
                                for g in gates], 0))
    return out


def rates(pairings, label: str) -> None:
    ps = np.array([[modified_t_test(x, y)[0], shift_test(x, y)] for x, y in pairings])
    at = lambda col, a: f"{np.mean(ps[:, col] < a):5.1%}"  # noqa: E731
    print(f"  {label:66s} {len(ps):4d}   modified t: {at(0, .05)} {at(0, .01)}   shift: {at(1, .05)} {at(1, .01)}")


def stability_rates(n: int) -> None:
    """The false-verdict rate of the stability analysis on unrelated pairings (see the docstring)."""
    from ivfusion import Fuser
    from ivfusion.stability import MIN_K, StabilityAnalysis, bootstrap_weights, combined_p, resampled_r

    fuser = Fuser(None, device="cpu")
    pairs = []
    for name in ("roadscene/test", "msrs/train"):
        for _, ir_path, vi_path in list(find_pairs(DATA / name))[: (n + 1) // 2]:
            ir, vis = load_pair(ir_path, vi_path)
            pairs.append([cv2.resize(a, SIZE, interpolation=cv2.INTER_AREA) for a in (vis, ir)])
    pairs = pairs[:n]
    for k in (MIN_K, 2 * MIN_K):
        results = [StabilityAnalysis(fuser, ("complementary",), k=k, seed=i, features=False, resample=True).run(*p)
                   for i, p in enumerate(pairs)]
        gates = [r.gate for r in results]
        verdicts, own = [], []
        for i, res in enumerate(results):
            own.append(res.correlation.verdict)
            for j in (i + 1, i + 3):  # two unrelated scenes each
                g = gates[j % len(gates)][::-1, ::-1].copy()
                inst = res.instability
                ok = np.isfinite(inst)
                r = pearson(inst[ok], g[ok])
                _, n_eff = modified_t_test(inst, g)
                boot = resampled_r(res.output_runs, [g], bootstrap_weights(res.done, i))[0]
                verdicts.append(combined_p(r, n_eff, boot) < 0.05)
        print(f"  stability verdicts, K={k}: unrelated gate {np.mean(verdicts):5.1%} of {len(verdicts)} pairings "
              f"(false-verdict rate, should be ~5%); own gate {np.mean(own):5.1%} of {len(own)} pairs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=300, help="random unrelated grey pairings (default 300)")
    p.add_argument("--authors", default=str(DATA.parent / "weights" / "authors" / "best.pth"))
    p.add_argument("--stability", type=int, default=24, metavar="N",
                   help="pairs for the stability verdict's false-verdict rate (default 24; 0: skip)")
    p.add_argument("--only-stability", action="store_true", help="print only the stability verdict's rates")
    args = p.parse_args()
    if args.stability:
        stability_rates(args.stability)
    if args.only_stability:
        return
    rng = np.random.default_rng(0)
    greys = grey_maps(40)
    flat = [m for pair in greys for m in pair]
    turned = lambda a: a[::-1, ::-1]  # noqa: E731
    print("share of pairings with p < 0.05 and p < 0.01                  pairings   modified t         shift test")
    unrelated = []
    while len(unrelated) < args.pairs:
        i, j = rng.choice(len(flat), 2, replace=False)
        if i // 2 != j // 2:
            unrelated.append((flat[i], turned(flat[j])))
    rates(unrelated, "unrelated grey images (should be ~5% / ~1%)")
    specs = [("bundled weights", None)] + ([("authors' checkpoint", args.authors)] if Path(args.authors).is_file() else [])
    for label, spec in specs:
        gates = gate_maps(spec, 12)
        crop = lambda a: a[BORDER:-BORDER, BORDER:-BORDER]  # noqa: E731
        rates([(crop(g), crop(turned(h))) for a, g in enumerate(gates) for b, h in enumerate(gates) if a != b],
              f"gate maps of unrelated scenes, {label} (~5% / ~1%)")
        rates([(g, turned(flat[k])) for g in gates for k in range(0, len(flat), 7)],
              f"gate maps against unrelated images, {label}")
    dependent = []
    for _ in range(60):
        i, j = rng.choice(len(flat), 2, replace=False)
        dependent.append((flat[i], flat[i] + 2 * turned(flat[j])))
    rs = [pearson(x.ravel(), y.ravel()) for x, y in dependent]
    rates(dependent, f"power: an image against itself + 2x another (median r {np.median(rs):.2f})")
    assert all(math.isfinite(r) for r in rs)


if __name__ == "__main__":
    main()
