"""How much two `ivfusion study` runs differ in their primary table (e.g. two seeds): per weights,
the largest change of a mean difference with the null, and the cells whose verdict changes.

    python tools/study_compare.py docs/study/contrast.csv docs/study-seed1/contrast.csv

Only cells present in both (same dataset, weights, intervention, measure and level) are compared.
"""
from __future__ import annotations

import csv
import sys

KEY = ("dataset", "weights", "intervention", "measure", "level")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = ({tuple(r[k] for k in KEY): r for r in csv.DictReader(open(p, newline=""))} for p in argv)
    common = sorted(set(a) & set(b))
    for weights in sorted({k[1] for k in common}):
        rows = [k for k in common if k[1] == weights]
        delta = max(abs(float(a[k]["mean_d"]) - float(b[k]["mean_d"])) for k in rows)
        same = sum(a[k]["verdict"] == b[k]["verdict"] for k in rows)
        print(f"{weights}: {len(rows)} cells; largest change of a mean d {delta:.3f}; same verdict in {same}")
        for k in rows:
            if a[k]["verdict"] != b[k]["verdict"]:
                print(f"  {' / '.join(k[:1] + k[2:])}: mean d {float(a[k]['mean_d']):+.3f} -> "
                      f"{float(b[k]['mean_d']):+.3f}, verdict {a[k]['verdict']} -> {b[k]['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
