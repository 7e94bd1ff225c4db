"""The architecture figure of the Lab's "How it works" tab, drawn from the model's own layout.

    python tools/architecture_figure.py [--out ivfusion/lab/architecture.png]

The boxes follow `ivfusion.modeling` (two encoders, one CFI per level, the decoder) and the
level scales come from `ivfusion.levels.GATE_LEVELS`, so the figure names what the code has.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def draw(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    from ivfusion.config import ISFuseConfig
    from ivfusion.levels import GATE_LEVELS

    cfg = ISFuseConfig()
    fig, ax = plt.subplots(figsize=(9.6, 4.6), dpi=110)
    ax.set_xlim(0, 12), ax.set_ylim(0, 6), ax.axis("off")

    def box(x, y, w, h, text, colour, size=9):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#333", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(a, b, colour="#333"):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, color=colour, lw=1))

    box(0.1, 4.4, 1.6, 0.8, "visible Y\n$V$", "#fff3c4")
    box(0.1, 0.8, 1.6, 0.8, "infrared\n$I$", "#ffd7c4")
    box(0.1, 2.6, 1.6, 0.8, "intervention\n(masks, dropout)", "#eeeeee", 8)
    arrow((0.9, 3.4), (0.9, 4.35)), arrow((0.9, 2.6), (0.9, 1.65))
    box(2.2, 4.4, 1.8, 0.8, "encoder (vi)", "#dbe8ff")
    box(2.2, 0.8, 1.8, 0.8, "encoder (ir)", "#dbe8ff")
    arrow((1.75, 4.8), (2.15, 4.8)), arrow((1.75, 1.2), (2.15, 1.2))
    ys = [3.9, 2.75, 1.6][::-1]  # fine at the bottom of the stack, coarse on top
    for level, y in zip(reversed(GATE_LEVELS), ys):
        scale = "1" if level.scale == 1 else f"1/{int(round(1 / level.scale))}"
        box(4.8, y - 0.35, 3.2, 0.7, f"CFI, {level.key} ({scale}): cross-attention\n"
            f"gate $g$: fused $= g\\cdot$cross $+ (1-g)\\cdot$sum", "#d9f2d9", 7.5)
        arrow((4.0, 4.75), (4.75, y + 0.1), "#5577aa"), arrow((4.0, 1.25), (4.75, y - 0.1), "#aa7755")
    box(8.6, 2.3, 1.5, 1.1, "decoder", "#dbe8ff")
    for y in ys:
        arrow((8.05, y), (8.55, 2.85))
    box(10.5, 2.3, 1.4, 1.1, "fused $F$\n(+ visible\ncolour)", "#f0e0ff", 8)
    arrow((10.15, 2.85), (10.45, 2.85))
    ax.text(6.4, 5.55, f"ISFuse: one invariance gate per level (r = {cfg.r}: keys pooled to {cfg.r}x{cfg.r} tokens; "
            f"target mean gate $\\eta$ = {cfg.eta:g})", ha="center", fontsize=9)
    ax.text(6.4, 0.25, "training: L = L_f + 0.1 L_inv (complementary, random masking) + 0.05 L_nec (dropouts)",
            ha="center", fontsize=8, color="#444")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "ivfusion" / "lab" / "architecture.png"))
    args = p.parse_args(argv)
    draw(Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
