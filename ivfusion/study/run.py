"""Running a study: every pair of every dataset through every set of weights, from the cache
where it can (`measure.Cache`), then `stats.contrast`, `stats.decide` and `stats.summarise`."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..cli_flags import failure_reason
from ..data import find_pairs, load_pair
from ..device import cpu_name, resolve_device
from ..hub import BUNDLED, NAMED_WEIGHTS, UNTRAINED, load_model
from ..predictor import Fuser
from .measure import Cache, StudySettings, measure_pair, pair_key, weights_key
from .stats import contrast, decide, summarise


@dataclass
class Dataset:
    """A folder of pairs and its label in the tables (its last two path parts, e.g. roadscene/test)."""

    label: str
    pairs: list[tuple[str, Path, Path]]  # (stem, infrared path, visible path), sorted by stem
    unmatched: str | None = None  # data.Pairs.unmatched_note: files left out for want of a partner


@dataclass
class Weights:
    """A weights spec as given, its label in the tables and its parameters' hash."""

    spec: str
    label: str
    key: str


@dataclass
class StudyResult:
    settings: StudySettings
    datasets: list[Dataset]
    weights: list[Weights]
    tests: list[dict]  # one per dataset, weights, pair, intervention, level and measure, with its verdict
    rows: list[dict]  # stats.summarise
    contrast: list[dict] = field(default_factory=list)  # stats.contrast: the primary statistic
    failures: list[dict] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
    stale: int = 0  # cached records torn or malformed, measured again (measure.Cache.stale)
    compute_s: float = 0.0
    total_s: float = 0.0
    cpu: str = ""
    q: float = 0.05

    def timing_line(self) -> str:
        return (f"study: {self.computed + self.cached} pair runs ({self.computed} computed in {self.compute_s:.0f} s, "
                f"{self.cached} from the cache), {len(self.failures)} failed; {self.total_s:.0f} s in all on "
                f"{self.cpu} with K={self.settings.k} per intervention type at max side {self.settings.max_side}")


def load_datasets(folders: list[str | Path], limit: int | None = None) -> list[Dataset]:
    """The pairs of each folder (`data.find_pairs`), the first `limit` by name when given."""
    out, seen = [], set()
    for folder in folders:
        path = Path(folder).resolve()
        label = "/".join(path.parts[-2:])
        while label in seen:
            label += "'"
        seen.add(label)
        found = find_pairs(path)
        pairs = list(found)
        out.append(Dataset(label, pairs[:limit] if limit else pairs, found.unmatched_note(label)))
    return out


def weights_label(spec: str, taken: set[str]) -> str:
    """'bundled', a shipped name, 'untrained', or a path's file or folder name (the whole spec when
    that name is taken)."""
    label = (spec if spec in (BUNDLED, UNTRAINED, *NAMED_WEIGHTS) or spec.startswith("hf://")
             else Path(spec).name or spec)
    return spec if label in taken else label


def run_study(datasets: list[Dataset], specs: list[str], settings: StudySettings, cache_dir: Path, *,
              q: float = 0.05, n_boot: int = 10_000, progress: bool = True, device: str = "cpu") -> StudyResult:
    """Measure every (weights, dataset, pair) not in the cache, then decide and summarise.

    A pair that cannot be read or fused is listed in `failures` with the reason and left out;
    weights that cannot be loaded raise `hub.WeightsError`, and a device that cannot be used
    ValueError, before any work.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    device = resolve_device(device)  # here, not in the per-pair Fuser: it is no pair's fault
    cache = Cache(cache_dir, settings)
    models, weights, taken = [], [], set()
    for spec in specs:  # load all first: a bad spec fails now, not after an hour
        model = load_model(spec)
        label = weights_label(spec, taken)
        taken.add(label)
        models.append(model)
        weights.append(Weights(spec, label, weights_key(model)))
    total = len(specs) * sum(len(d.pairs) for d in datasets)
    result = StudyResult(settings, datasets, weights, [], [], cpu=cpu_name(), q=q)
    contents = {}
    with tqdm(total=total, desc="study", unit="pair", disable=not progress, file=sys.stderr) as bar:
        for model, w in zip(models, weights):
            fuser = None  # built on the first pair not in the cache
            for d in datasets:
                for stem, ir_path, vi_path in d.pairs:
                    bar.set_postfix_str(f"{w.label} {d.label}/{stem}", refresh=False)
                    try:
                        content = contents.get(ir_path)
                        if content is None:  # hashed once, not once per weights
                            content = contents[ir_path] = pair_key(ir_path, vi_path)
                        record = cache.get(w.key, d.label, stem, content)
                        if record is None:
                            fuser = fuser or Fuser(model, device=device, max_side=settings.max_side)
                            visible, infrared = load_pair(ir_path, vi_path, form="image")
                            t = time.perf_counter()
                            record = measure_pair(fuser, visible, infrared, settings)
                            result.compute_s += time.perf_counter() - t
                            result.computed += 1
                            cache.put(w.key, d.label, stem, content, record)
                        else:
                            result.cached += 1
                    except (ValueError, OSError, MemoryError) as e:  # a bad pair is reported, not fatal
                        result.failures.append({"dataset": d.label, "weights": w.label, "pair": stem,
                                                "reason": failure_reason(e)})
                    else:
                        for test in record["tests"]:
                            result.tests.append({"dataset": d.label, "weights": w.label, "pair": stem, **test})
                    bar.update(1)
    result.stale = len(cache.stale)
    result.tests = decide(result.tests, q)
    result.rows = summarise(result.tests, n_boot=n_boot, seed=settings.seed)
    result.contrast = contrast(result.tests, q=q, n_boot=n_boot, seed=settings.seed)
    result.total_s = time.perf_counter() - t0
    return result
