"""``ivfusion evaluate``: score fusion methods' outputs with the eleven metrics.

    ivfusion evaluate --infrared DIR --visible DIR --fused DIR [--fused DIR2 ...] [--names A,B]
                      [--weights SPEC ...] [--interventions] [--baseline mean|max]
                      [--csv F] [--json F] [--plot F] [--workers N]

Pairs come from
:func:`ivfusion.data.find_pairs` (file names without suffix found in both folders); each
method's output is the image with the same name in its ``--fused`` folder (any image
suffix). Every image is read for the metrics as the reference values were made
(:func:`ivfusion.metrics.read_grey`, through the guarded decoder). Whatever fails for one pair
(missing, unreadable, oversized or mis-sized files, the network failing) is reported with the
pair's name and the reason, and the rest is still scored.

Output: a Markdown table of per-method means (the best value of each column in bold), and on
request per-image values as CSV/JSON and a box plot PNG. ``--weights SPEC`` (repeatable; the
authors' ``best.pth`` is one accepted spec) also runs ISFuse itself on each pair and prints a
second table, the gate diagnostics: per weights spec and level (coarse, mid, fine, from
:data:`ivfusion.levels.GATE_LEVELS`) the gate map's mean, spatial std and 1st-99th percentile
span, averaged over the pairs (also in the CSV and JSON). With ``--interventions`` it also
fuses each pair under every intervention of the registry (fixed seeds) and reports each
metric's relative change against the clean output, with each gate level's mean next to eta.

"Best" per column: all eleven metrics are read as higher-is-better
(:data:`ivfusion.metrics.HIGHER_IS_BETTER`), as fusion papers do. Two of them are ambiguous
and the table still bolds the highest value: EN/SD/SF/AG also rise with noise and artefacts,
and PSNR is ``inf`` only for an output equal to both sources (a tie of such outputs is bold
for all of them). NaN (a metric undefined for a degenerate image, e.g. SCD where a difference
image is constant; see :mod:`ivfusion.metrics`) is never best and is left out of the means;
the table's notes say where.

Exit status of the command: 0 when everything was scored, 1 when some output or pair was not
scored (the rest is still scored and written), 2 for usage errors.

Modules: ``results`` (containers, CSV/JSON), ``scoring`` (folders and baselines), ``model``
(ISFuse, gates, interventions), ``report`` (tables, plot), ``pool`` (parallel scoring),
``cli`` (the command).
"""

from __future__ import annotations

from . import pool
from .cli import add_parser, run
from .model import INTERVENTION_KINDS, MODEL_METHOD, evaluate_model
from .report import gates_table, interventions_table, markdown_table, plot_results
from ..levels import GATE_STATS, gate_stats
from .results import EvaluationResults, InterventionReport, MethodResult
from .scoring import BASELINES, evaluate_baseline, evaluate_folders

__all__ = [
    "MethodResult",
    "EvaluationResults",
    "InterventionReport",
    "GATE_STATS",
    "gate_stats",
    "evaluate_folders",
    "evaluate_model",
    "evaluate_baseline",
    "BASELINES",
    "MODEL_METHOD",
    "INTERVENTION_KINDS",
    "markdown_table",
    "gates_table",
    "interventions_table",
    "plot_results",
    "add_parser",
    "run",
    "pool",
]
