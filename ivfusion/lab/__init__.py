"""The Intervention Lab's app-side code: everything `app.py` does except drawing widgets.

Imported only by `app.py` and `ivfusion bench --app`; the library core never imports it.
One module per concern:

* `models`: `ModelBank`, the models the Lab offers, each loaded once and shared.
* `uploads`: uploads to checked numpy images, the pair description, drawn masks.
* `session`: per-session state and per-request files.
* `settings`: the intervention controls (`Settings`) and the keep masks they make.
* `examples`: the bundled example pairs.
* `lesson`: the lesson's steps on the Lab tab.
* `runs`: one request, the clean and the intervened pass (`LabRun`), from a `SharedPair`.
* `cache`: what visitors share, by content: pairs' clean passes and finished results.
* `render`: the figures of one request.
* `downloads`: the metrics table and the download files.
* `analysis`: the stability analysis as the page shows it.
* `callbacks`: the page's callbacks with named outputs (needs Gradio; imported by app.py).
"""
from . import downloads, examples, lesson, render, settings
from .analysis import interventions_of, run_stability, stability_figures
from .downloads import METRIC_HEADERS, METRICS_NOTE, metric_sources, metrics_table, save_image, write_downloads
from .examples import DEFAULT_EXAMPLE, EXAMPLES, EXAMPLES_DIR, example_pairs
from .models import (APP_MAX_SIDE, DEFAULT_CHOICE, OFFICIAL_CHOICE, UNTRAINED_CHOICE, ModelBank, hub_reachable,
                     make_fuser)
from .render import GATE_SCALE_CHOICES, LabFigures, LevelFigures, gate_scale_name, render_levels
from .runs import LabRun, SharedPair, colour_from_visible, run_pair, run_session_pair
from .session import SESSION_TTL_S, request_dir
from .settings import DROPOUT_CHOICES, Settings, intervention_masks
from .uploads import (MAX_UPLOAD_PIXELS, describe_image, display_copy, drawn_keep_mask, load_image, pair_info,
                      size_notes, source_path)
