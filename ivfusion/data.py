"""Pairs on disk: the one `find_pairs` (discovery) and the one `load_pair` (reading), and
`load_scored_pair` for a pair a model is run and scored on. The training set built on them is
`ivfusion.train.dataset.PairDataset`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import io

PAIR_FORMS = ("network", "image", "grey")


class Pairs(list):
    """What `find_pairs` returns: a list of (stem, infrared path, visible path) sorted by stem,
    plus the files that have no partner: `infrared_only` and `visible_only` (stem -> path)."""

    def __init__(self, items=(), infrared_only=None, visible_only=None):
        super().__init__(items)
        self.infrared_only: dict[str, Path] = dict(infrared_only or {})
        self.visible_only: dict[str, Path] = dict(visible_only or {})

    def unmatched(self) -> list[str]:
        """The files without a partner, as 'NAME (infrared only)' and 'NAME (visible only)'."""
        return ([f"{p.name} (infrared only)" for p in self.infrared_only.values()]
                + [f"{p.name} (visible only)" for p in self.visible_only.values()])

    def unmatched_note(self, where: str) -> str | None:
        """The one line every command prints for the files of `where` left out for want of a
        partner (a file on one side only is never skipped silently), or None when there are none."""
        names = self.unmatched()
        if not names:
            return None
        return (f"{where}: skipped {len(names)} file(s) with no file of the same name on the other side: "
                f"{_examples(names, 5)}")


def _examples(names, n: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


# A dataset folder's (infrared, visible) sub-folders: this project's layout first, then the
# spellings other fusion benchmarks ship with.
DATASET_LAYOUTS = (("ir", "vi"), ("infrared", "visible"), ("Infrared", "Visible"), ("IR", "VI"), ("ir", "vis"))


def find_pairs(root: str | os.PathLike | None = None, *, infrared: str | os.PathLike | None = None,
               visible: str | os.PathLike | None = None, allow_empty: bool = False) -> Pairs:
    """The registered pairs of a dataset folder: files with the same name (suffix aside) in
    both the infrared and the visible folder.

    Give either `root` (a folder holding `ir/` and `vi/`, or another of DATASET_LAYOUTS) or both `infrared` and
    `visible` folders. Raises FileNotFoundError for a missing folder and ValueError when no
    pair is found (unless allow_empty), saying whether a folder holds no images or the file
    names differ between the two sides, with examples of each.
    """
    if root is not None:
        if infrared is not None or visible is not None:
            raise ValueError("give either a dataset folder (with ir/ and vi/) or the infrared and visible folders, not both")
        root = Path(root)
        found = [(root / a, root / b) for a, b in DATASET_LAYOUTS if (root / a).is_dir() and (root / b).is_dir()]
        if not found:
            names = ", ".join(f"{a}/ and {b}/" for a, b in DATASET_LAYOUTS)
            raise FileNotFoundError(f"{root}: expected sub-folders holding the pairs ({names})")
        infrared, visible = found[0]
    elif infrared is None or visible is None:
        raise ValueError("find_pairs needs a dataset folder, or both an infrared and a visible folder")
    infrared, visible = Path(infrared), Path(visible)
    for label, folder in (("infrared", infrared), ("visible", visible)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{label} folder not found: {folder}")
    ir, vi = io.list_images(infrared), io.list_images(visible)
    common = sorted(set(ir) & set(vi))
    pairs = Pairs([(stem, ir[stem], vi[stem]) for stem in common],
                  {s: ir[s] for s in sorted(set(ir) - set(vi))}, {s: vi[s] for s in sorted(set(vi) - set(ir))})
    if pairs or allow_empty:
        return pairs
    accepted = f"accepted suffixes: {' '.join(io.IMAGE_SUFFIXES)}"
    empty = [f"{label} folder {folder} holds no images ({accepted})"
             for label, folder, files in (("infrared", infrared, ir), ("visible", visible, vi)) if not files]
    if empty:
        raise ValueError("no pairs found: " + "; ".join(empty))
    raise ValueError(
        f"no pairs found: the file names in {infrared} and {visible} differ, and pairs are matched by "
        f"file name without its suffix (infrared: {_examples(p.name for p in ir.values())}; "
        f"visible: {_examples(p.name for p in vi.values())})"
    )


def load_pair(ir_path: str | os.PathLike, vi_path: str | os.PathLike, form: str = "network",
              same_size: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair; returns (visible, infrared) in the requested form.

    form="network": the network's inputs, (visible Y, infrared), each (H, W) float32 in [0, 1];
        Y from OpenCV's YCrCb weights computed in float without rounding, as the reference does.
    form="image": the decoded files as `io.read_image` gives them: (H, W[, C]) uint8/uint16,
        RGB(A) or grey (what `Fuser` takes).
    form="grey": grey levels as the metrics read files (`metrics.read_grey`): (H, W) float64
        in 0..255.
    Every file goes through the guarded decoder (io.read_image). With same_size (default) a
    pair whose two images differ in size is an io.ImageError naming both sizes.
    """
    if form not in PAIR_FORMS:
        raise ValueError(f"unknown pair form {form!r}; accepted: {', '.join(PAIR_FORMS)}")
    ir_path, vi_path = Path(ir_path), Path(vi_path)
    if form == "grey":
        from .metrics import read_grey

        vis, ir = read_grey(vi_path), read_grey(ir_path)
    else:
        vis, ir = io.read_image(vi_path), io.read_image(ir_path)
    if same_size and vis.shape[:2] != ir.shape[:2]:
        (vh, vw), (ih, iw) = vis.shape[:2], ir.shape[:2]
        raise io.ImageError(f"{vi_path.name}: the visible image is {vw}x{vh} but the infrared image "
                            f"{ir_path.name} is {iw}x{ih}; a pair must be registered (same size)")
    if form == "network":
        ir, _ = io.infrared_to_grey(ir)
        vis = np.ascontiguousarray(io.visible_to_ycrcb(vis)[..., 0])
    return vis, ir


class ScoredPair(NamedTuple):
    """A pair as a model is both run and scored on it (training's validation, the tools):
    visible_y, infrared: the network's inputs (`load_pair`, form "network");
    visible: the decoded visible image, whose Cr/Cb the fused image is written with;
    visible_grey, infrared_grey: the sources as the metrics read their files (form "grey").
    Score a fused luminance F with
    `metrics.evaluate_pair(p.infrared_grey, p.visible_grey, metrics.fused_grey(F, p.visible))`,
    the numbers `ivfusion evaluate` gives for the written file."""

    visible_y: np.ndarray
    infrared: np.ndarray
    visible: np.ndarray
    visible_grey: np.ndarray
    infrared_grey: np.ndarray


def load_scored_pair(ir_path: str | os.PathLike, vi_path: str | os.PathLike) -> ScoredPair:
    """Read one pair for running and scoring a model on it (`ScoredPair`)."""
    y, ir = load_pair(ir_path, vi_path)
    visible_grey, infrared_grey = load_pair(ir_path, vi_path, form="grey")
    visible, _ = load_pair(ir_path, vi_path, form="image")
    return ScoredPair(y, ir, visible, visible_grey, infrared_grey)
