"""How much two `ivfusion study` runs differ (e.g. two seeds): per weights, the largest change of
a mean r and the rows whose bootstrap interval moves to another side of 0.

    python tools/study_compare.py docs/study/summary.csv docs/study-seed1/summary.csv

Only rows present in both (same dataset, weights, intervention, measure and level) are compared.
"""
from __future__ import annotations

import csv
import sys

KEY = ("dataset", "weights", "intervention", "measure", "level")


def side(row: dict) -> str:
    lo, hi = float(row["ci_low"]), float(row["ci_high"])
    return "above 0" if lo > 0 else "below 0" if hi < 0 else "includes 0"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = ({tuple(r[k] for k in KEY): r for r in csv.DictReader(open(p, newline=""))} for p in argv)
    common = sorted(set(a) & set(b))
    for weights in sorted({k[1] for k in common}):
        rows = [k for k in common if k[1] == weights]
        delta = max(abs(float(a[k]["mean_r"]) - float(b[k]["mean_r"])) for k in rows)
        print(f"{weights}: {len(rows)} rows; largest change of a mean r {delta:.3f}")
        for k in rows:
            if side(a[k]) != side(b[k]):
                print(f"  {' / '.join(k[:1] + k[2:])}: mean r {float(a[k]['mean_r']):+.3f} -> {float(b[k]['mean_r']):+.3f}, "
                      f"interval {side(a[k])} -> {side(b[k])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
