"""ISFuse Intervention Lab: fuse infrared/visible pairs, intervene, and watch the invariance gates.

Run `python app.py` (then open http://127.0.0.1:7860). It runs offline on the bundled
weights and examples. This file only draws widgets and wires them; the logic lives in
`ivfusion.lab` (callbacks, runs, stability, metrics, downloads) and `ivfusion.viz` (heat maps).
The gradio_client API (/fuse, /render, /metrics, /downloads, /compare, /stability) is documented
in docs/API.md.

Environment: IVFUSION_WEIGHTS (default model: a path or hf://owner/repo; the bundled file is
the fallback), IVFUSION_OFFICIAL_WEIGHTS (offers the authors' checkpoint), IVFUSION_MAX_SIDE
(downscale limit, default 640), IVFUSION_THREADS (torch threads), IVFUSION_CONCURRENCY
(requests computed at once, default 1), IVFUSION_QUEUE (queue size, default 96),
IVFUSION_PROXY_HOPS, IVFUSION_HOLD_BUDGET_S, IVFUSION_HUB_DEADLINE_S (docs/CONFIG.md),
IVFUSION_STABILITY_BUDGET_S (a stability run's time budget in seconds per 8 interventions, default 30),
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio's own).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from ivfusion import lab  # noqa: E402
from ivfusion.io import ImageError  # noqa: E402
from ivfusion.lab import callbacks as cb  # noqa: E402
from ivfusion.lab import browser as in_browser  # noqa: E402 - the in-browser Fuse (issue 28)
from ivfusion.lab.callbacks import (COMPARE_OUTPUTS, FUSE_OUTPUTS, LESSON_OUTPUTS, MODEL_OUTPUTS, PAIR_OUTPUTS,  # noqa: E402
                                    RENDER_OUTPUTS, STABILITY_BUDGET_PER, STABILITY_OUTPUTS, ordered, user_errors)
from ivfusion.lab.render import DEFAULT_GATE_SCALE, GATE_GRID, GATE_SCALE_CHOICES  # noqa: E402
from ivfusion.levels import GATE_LEVELS  # noqa: E402

try:  # Hugging Face ZeroGPU Spaces: run the heavy callbacks on a GPU when one is lent
    import spaces

    gpu = spaces.GPU
except Exception:  # noqa: BLE001 - no `spaces` package (local run, CPU Space): a no-op
    def gpu(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)

log = logging.getLogger("ivfusion.app")

PAPER = "https://arxiv.org/abs/2603.23272"
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
HOW_IT_WORKS = (Path(lab.__file__).parent / "how_it_works.md").read_text().replace("{PAPER}", PAPER)
SWITCH_INTERVAL_S = 0.0005  # the Lab process's GIL switch interval (build_demo)
API_FUSE_OUTPUTS = FUSE_OUTPUTS[:-1]  # what gradio_client gets from /fuse: the state stays on the server

INTRO = f"""
# ISFuse Intervention Lab
Fuse an **infrared** and a **visible** image with ISFuse ([Wang et al., CVPR 2026]({PAPER})), then *intervene*:
hide parts of an input or drop a modality, and watch the **invariance gates**, the maps of where the model
uses cross-modal features (bright: open), move. Pick an example or upload a pair, then press **Fuse**.
"""

CSS = """
.lab-note {font-size: 0.95em}
.phone-only {display: none}
#fuse-btn {min-height: 3em; font-size: 1.1em}
#examples .grid-wrap {min-height: 0 !important; height: auto !important}
#examples .thumbnail-item {aspect-ratio: 2 / 1 !important}  /* a pair thumbnail is two 4:3 images wide */
#how-it-works .katex-display {overflow-x: auto; overflow-y: hidden}  /* long equations scroll on a phone */
#how-it-works td, #how-it-works th {word-break: normal; overflow-wrap: normal; hyphens: none}
/* on a phone, the gate figure's panels one under the other (PHONE_GATES adds #gates-phone there only) */
#gates:has(+ #gates-phone) {display: none !important}
#gates-phone img {display: block; width: 100%; height: auto; margin: 0 0 10px 0}
@media (max-width: 600px) {
  /* Gradio's own 32 px page margins left a 390 px phone 326 px for the tabs' content, figures
     included; its page element sits outside what this CSS can select (Gradio scopes it), so the
     tabs reach into those margins */
  .tabs {margin-left: -26px !important; width: calc(100% + 52px) !important; max-width: none !important}
  .phone-only {display: block !important}
  #how-it-works table {display: block; overflow-x: auto}
  #metrics table {font-size: 0.85em}
}
"""


def _editor_value(source):
    """The mask editor's value for an input image: the image as its background, no layers.
    A path outside the Lab's folders gives an empty editor (uploads.source_path's gate)."""
    try:
        path = lab.source_path(source)
    except ImageError:
        return None
    return {"background": path, "layers": [], "composite": path} if path else None


def _fill_editors(visible, infrared, draw_visible, draw_infrared):
    return tuple(gr.skip() if drawn else _editor_value(src)
                 for src, drawn in ((visible, draw_visible), (infrared, draw_infrared)))


# On a phone the gate figure's nine panels (render.GATE_GRID) are shown one under the other, level
# by level (clean, intervened, change), each at the screen's width: nine views of the one
# served file (object-view-box crops a panel), so nothing more is computed or sent. Where the
# script does not run, the figure shows whole.
PHONE_GATES = """() => {
  const G = %s;
  const build = () => {
    const img = document.querySelector('#gates img');
    let box = document.getElementById('gates-phone');
    const phone = window.innerWidth <= 600 && img && img.complete && img.naturalWidth > 0;
    if (!phone) {
      if (box && window.innerWidth > 600) box.remove();  // the whole figure again (CSS shows it)
      return;
    }
    if (box && box.dataset.src === img.src) return;
    if (!box) {
      box = document.createElement('div');
      box.id = 'gates-phone';
      document.getElementById('gates').insertAdjacentElement('afterend', box);
    }
    const W = img.naturalWidth, H = img.naturalHeight;
    const w = (W - (G.cols - 1) * G.col_gap) / G.cols, h = (H - (G.rows - 1) * G.row_gap) / G.rows;
    const cells = [];
    for (let r = 0; r < G.rows; r++) for (let c = 0; c < G.cols; c++) {
      const cell = document.createElement('img');
      const x = c * (w + G.col_gap), y = r * (h + G.row_gap);
      cell.src = img.src;
      cell.alt = img.alt || 'gate map';
      cell.style.aspectRatio = `${w} / ${h}`;
      cell.style.objectViewBox = `inset(${y}px ${W - x - w}px ${H - y - h}px ${x}px)`;
      cells.push(cell);
    }
    box.dataset.src = img.src;
    box.replaceChildren(...cells);
  };
  new MutationObserver(build).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                      attributeFilter: ['src']});
  document.addEventListener('load', build, true);
  window.addEventListener('resize', build);
  build();
}""" % json.dumps(GATE_GRID)


def _named(fn, names):
    """Wrap a callback returning named outputs into one returning them in `names` order."""
    @functools.wraps(fn)  # keeps the signature: the API's parameter names are the callback's
    def wrapper(*args, **kwargs):
        return ordered(names, fn(*args, **kwargs))

    return wrapper


class LabApp(cb.LabCallbacks):
    """The app: the callbacks of `ivfusion.lab.callbacks` plus the upload handlers and the layout."""

    # -- inputs
    @user_errors
    def on_input(self, source):
        """An image was uploaded: check it, and replace it by a lossless PNG copy when the browser
        cannot show the file (TIFF; 16-bit depth is kept)."""
        if source is None:
            return gr.skip()
        lab.uploads.verify(source, "image")  # a corrupt, truncated or oversized upload is reported now
        png = lab.display_copy(source, lab.request_dir())
        # gr.skip(), not gr.update(): an unchanged value written back would fire the image's
        # change event again (one more request chain per upload)
        return png if png else gr.skip()

    def info(self, visible, infrared):
        """The pair description under the inputs; a bad image is described there (the upload
        handler and Fuse raise the error)."""
        try:
            return lab.pair_info(visible, infrared, self.bank.max_side)
        except (ImageError, ValueError) as e:
            return f"**Cannot use this pair:** {e}"

    def pick_example(self, evt: gr.EventData):
        """An example thumbnail was clicked: load its pair. gr.EventData, not gr.SelectData:
        Gradio builds a SelectData by indexing the event's data, so a client sending none got
        an HTTP 500; anything but a valid index is skipped here."""
        pairs = lab.example_pairs()
        data = getattr(evt, "_data", None)
        index = data.get("index") if isinstance(data, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(pairs):
            return gr.skip(), gr.skip()
        return pairs[index][0], pairs[index][1]

    def on_pair_change(self, visible, infrared, hole_percent):
        """A new image in either input: in one request, the pair description, the hole size in
        pixels and the mask editors emptied (the draw panel fills them again when it opens).
        The results stay on screen until the next Fuse. Outputs: PAIR_OUTPUTS."""
        return ordered(PAIR_OUTPUTS, dict(pair_info=self.info(visible, infrared),
                                          hole_text=self.hole_text(visible, hole_percent),
                                          draw_visible=None, draw_infrared=None))

    def on_step(self, choice):
        """A lesson step was picked: its card, and the controls and pair it sets (the
        results stay until Fuse). Outputs: LESSON_OUTPUTS."""
        step = lab.lesson.step_of(choice)
        if step is None:
            return ordered(LESSON_OUTPUTS, {n: gr.skip() for n in LESSON_OUTPUTS} | {"card": lab.lesson.card(None)})
        pair = {Path(v).stem: (v, i) for v, i, _ in lab.example_pairs()}.get(lab.lesson.EXAMPLE, (None, None))
        return ordered(LESSON_OUTPUTS, {"card": lab.lesson.card(step), "visible": pair[0] or gr.skip(),
                                        "infrared": pair[1] or gr.skip(), **step.controls})

    # -- layout
    def build(self) -> gr.Blocks:
        examples = lab.example_pairs()
        first = self.default_outputs
        v0, i0 = self.default_pair
        png = dict(format="png", buttons=["download", "fullscreen"])
        heat = dict(buttons=["fullscreen"], interactive=False, min_width=0)
        with gr.Blocks(title="ISFuse Intervention Lab", delete_cache=(300, 900)) as demo:
            state = gr.State({}, time_to_live=lab.SESSION_TTL_S)
            gr.Markdown(INTRO)
            startup_md = gr.Markdown("**Note:** " + " ".join(self.startup_notes), elem_id="startup-note",
                                     elem_classes="lab-note", visible=bool(self.startup_notes))
            with gr.Tab("Lab"):
                # Three columns on a desktop: the inputs and the model, the results (the fused
                # images and the gate maps, on the first screen), the controls and the examples;
                # on a phone they stack in that order, so the results come right after the inputs.
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        # labels as text above the images: a label inside a 150 px image box is covered
                        # by its buttons (the `label`s still name the API's parameters)
                        gr.Markdown("**Visible image** | **Infrared image**", elem_classes="lab-note")
                        with gr.Row():
                            visible = gr.Image(v0, label="Visible image", show_label=False, type="filepath",
                                               image_mode=None, sources=["upload", "clipboard"], elem_id="visible-input",
                                               min_width=140, height=190, **png)
                            infrared = gr.Image(i0, label="Infrared image", show_label=False, type="filepath",
                                                image_mode=None, sources=["upload", "clipboard"],
                                                elem_id="infrared-input", min_width=140, height=190, **png)
                        pair_md = gr.Markdown(self.info(v0, i0), elem_id="pair-info", elem_classes="lab-note")
                        model = gr.Dropdown(self.bank.choices(), value=self.default_model, label="Model")
                        model_md = gr.Markdown(self.model_info(self.default_model), elem_classes="lab-note")
                    with gr.Column(scale=5, min_width=300, elem_id="results"):
                        notices = gr.Markdown(first.get("notices"), elem_id="notices", elem_classes="lab-note")
                        gr.HTML('<div id="ivf-web"></div>', elem_id="ivf-web-host")  # filled by web/lab.js
                        gr.Markdown("**Fused image**: clean (no intervention) | intervened | the change",
                                    elem_classes="lab-note")
                        with gr.Row(equal_height=True):  # wraps on a phone
                            fused_clean = gr.Image(first.get("fused_clean"), label="Fused, clean", show_label=False,
                                                   interactive=False, elem_id="fused-clean", min_width=150, height=210,
                                                   **png)
                            fused_int = gr.Image(first.get("fused_intervened"), label="Fused, intervened",
                                                 show_label=False, interactive=False, elem_id="fused-intervened",
                                                 min_width=150, height=210, **png)
                            diff = gr.Image(first.get("difference"), label="Change in the fused image", show_label=False,
                                            elem_id="difference", **(heat | dict(min_width=150, height=210)))
                        diff_md = gr.Markdown(first.get("difference_caption"), elem_id="difference-caption",
                                              elem_classes="lab-note")
                        gr.Markdown("**Invariance gates**, level by level (coarse, mid, fine): clean, intervened, "
                                    "change.", elem_classes=["lab-note", "phone-only"])
                        gates_img = gr.Image(first.get("gates"), label="Invariance gates per level: clean | "
                                             "intervened | change", show_label=False, elem_id="gates", **heat)
                        gate_scale = gr.Radio(list(GATE_SCALE_CHOICES), value=DEFAULT_GATE_SCALE, elem_id="gate-scale",
                                              label="Gate colour scale (redraws without running the model)")
                        gate_md = gr.Markdown(first.get("gate_captions"), elem_classes="lab-note",
                                              elem_id="gate-captions")
                    with gr.Column(scale=3, min_width=300):
                        # -- lesson (H5): step cards beside the controls; each step sets them
                        with gr.Group(elem_id="lesson"):
                            step_menu = gr.Dropdown(list(lab.lesson.CHOICES), value=None, label="Lesson: pick a step",
                                                    elem_id="lesson-step")
                            step_card = gr.Markdown(lab.lesson.card(None), elem_id="lesson-card",
                                                    elem_classes="lab-note")
                        # -- end lesson
                        gr.Markdown("**Interventions** (they combine)")
                        with gr.Row():
                            complementary = gr.Checkbox(cb.DEFAULTS["complementary"], label="Complementary masking")
                            random_masking = gr.Checkbox(cb.DEFAULTS["random_masking"], label="Random masking")
                        dropout = gr.Radio(list(lab.DROPOUT_CHOICES), value="none", label="Modality dropout")
                        with gr.Row():
                            hole_percent = gr.Slider(*lab.settings.HOLE_PERCENT_RANGE, value=cb.DEFAULTS["hole_percent"],
                                                     step=0.25, label="Hole size (% of the short side)",
                                                     elem_id="hole-size")
                            holes = gr.Slider(1, 6, value=cb.DEFAULTS["holes"], step=1, label="Holes per mask")
                        hole_md = gr.Markdown(self.hole_text(v0, cb.DEFAULTS["hole_percent"]), elem_id="hole-px",
                                              elem_classes="lab-note")
                        with gr.Row(equal_height=True):
                            seed = gr.Number(0, precision=0, minimum=0, maximum=lab.settings.MAX_SEED, label="Seed",
                                             scale=1, min_width=90, elem_id="seed")
                            fuse_btn = gr.Button("Fuse", variant="primary", elem_id="fuse-btn", scale=3)
                            web_btn = gr.Button("Fuse", variant="primary", elem_id="fuse-web-btn", scale=3)
                        gr.Markdown("**Example pairs** (visible | infrared): click one", elem_classes="lab-note")
                        gallery = gr.Gallery(
                            [(lab.examples.thumbnail(v, i, self.static_dir), label) for v, i, label in examples],
                            label="Example pairs", show_label=False, columns=2, height="auto",
                            allow_preview=False, object_fit="contain", elem_id="examples")
                with gr.Accordion("Draw your own mask (optional): paint over an input to hide it",
                                  open=False) as draw_panel:
                    gr.Markdown("Painted pixels are hidden from the network (multiplied by 0), on top of the "
                                "interventions above. Example: hide a pedestrian in the infrared image and see whether "
                                "the visible image compensates. Clearing the canvas keeps the image.",
                                elem_classes="lab-note")
                    brush = gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=24)
                    with gr.Row():
                        draw_vis = gr.ImageEditor(None, label="Mask over the visible image",
                                                  type="filepath", sources=[], brush=brush, layers=False, transforms=[],
                                                  format="png", elem_id="draw-visible")
                        draw_ir = gr.ImageEditor(None, label="Mask over the infrared image",
                                                 type="filepath", sources=[], brush=brush, layers=False, transforms=[],
                                                 format="png", elem_id="draw-infrared")
                gr.Markdown("### What the network saw\nThe inputs after the intervention, visible (Y) left and "
                            "infrared right (black = hidden).")
                inputs_img = gr.Image(first.get("inputs"), label="Network inputs", show_label=False, interactive=False,
                                      elem_id="inputs", **png)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        gr.Markdown("### Metrics\n" + lab.downloads.METRICS_NOTE, elem_classes="lab-note")
                        table = gr.Dataframe(self.default_metrics, headers=lab.METRIC_HEADERS, interactive=False,
                                             elem_id="metrics", column_count=len(lab.METRIC_HEADERS), wrap=True)
                    with gr.Column(scale=2, min_width=280):
                        gr.Markdown("### Downloads\nFused images (lossless PNG) and the gate maps (`.npz`, with the "
                                    "masks and the difference map), written when you ask.")
                        dl_btn = gr.Button("Prepare downloads", elem_id="downloads-btn")
                        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                with gr.Accordion("Compare two models: the same pair and masks through a second model", open=False,
                                  elem_id="compare-section"):
                    others = [c for c in self.bank.choices() if c != self.default_model]
                    with gr.Row():
                        # the untrained network by default: it works offline, and it is the null model
                        offline = lab.UNTRAINED_CHOICE if lab.UNTRAINED_CHOICE in others else (others or [None])[0]
                        other_model = gr.Dropdown(others, value=offline, label="Compare with",
                                                  elem_id="compare-model", min_width=240)
                        compare_btn = gr.Button("Compare", elem_id="compare-btn", min_width=120)
                    compare_md = gr.Markdown(elem_id="compare-text", elem_classes="lab-note")
                    compare_fused = gr.Image(label="Fused, intervened: first model | second model", show_label=True,
                                             interactive=False, elem_id="compare-fused", **png)
                    compare_imgs = [gr.Image(label=f"{lv.label}: first model above, second below (clean | intervened "
                                                   "| change)", show_label=True, elem_id=f"compare-{lv.key}", **heat)
                                    for lv in GATE_LEVELS]
                gr.Markdown("### Stability analysis\nRuns K seeded interventions (the masking ones selected above; "
                            "none selected: complementary and random masking alternately; modality dropout is left "
                            "out, since it hides a whole input in every run) and asks whether the gates open "
                            "where the model is stable: how much the fused image changes at each pixel, over the runs "
                            "in which that pixel was visible, against the mean gate; and, per level, the relative change of "
                            "the cross-attended features against that level's gate. The paper's claim predicts a "
                            f"negative r. The Lab reports whatever this pair shows. A run may take "
                            f"{self.stability_budget_s:g} s per {STABILITY_BUDGET_PER} interventions, then stops and "
                            "shows the runs done; others' Fuse goes first between runs.")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=240):
                        k_slider = gr.Slider(4, 32, value=8, step=1, label="K interventions", elem_id="k-slider")
                        with gr.Row():
                            stab_btn = gr.Button("Run stability analysis", variant="secondary", elem_id="stability-btn")
                            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn", min_width=80)
                    inst_img = gr.Image(label="Output instability (grey: never visible)", elem_id="instability",
                                        scale=2, **(heat | dict(min_width=300)))
                    gmean_img = gr.Image(label="Mean gate (clean pass)", elem_id="mean-gate", scale=2,
                                         **(heat | dict(min_width=300)))
                stab_md = gr.Markdown(elem_id="stability-text", elem_classes="lab-note")
                gr.Markdown("**Feature change per level**, coarse | mid | fine: the relative change of the cross-attended "
                            "features (what each gate reads) under the interventions, over the runs in which each "
                            "pixel's footprint was visible, as a share of the clean features' size there.",
                            elem_classes="lab-note")
                feat_img = gr.Image(label="Feature change per level: coarse | mid | fine", show_label=False,
                                    elem_id="feature-change", **heat)
            with gr.Tab("How it works"):
                gr.Image(str(Path(lab.__file__).parent / "architecture.png"), show_label=False, interactive=False,
                         elem_id="architecture", buttons=["fullscreen"])  # drawn by tools/architecture_figure.py
                gr.Markdown(HOW_IT_WORKS, latex_delimiters=LATEX, elem_id="how-it-works")

            comps = {"fused_clean": fused_clean, "fused_intervened": fused_int, "difference": diff,
                     "difference_caption": diff_md, "inputs": inputs_img,
                     "gates": gates_img, "gate_captions": gate_md, "notices": notices,
                     "state": state}
            fuse_outputs = [comps[n] for n in FUSE_OUTPUTS]
            render_outputs = [comps[n] for n in RENDER_OUTPUTS]

            # wiring: uploads. One request chain per new image (tests/test_browser.py counts them):
            # one unqueued request for everything the page says about the pair, then the queued
            # prefetch of its clean pass. No handler writes back into the component that
            # triggered it, except on_input's PNG copy of a TIFF, which the browser cannot show.
            comps.update(pair_info=pair_md, hole_text=hole_md, draw_visible=draw_vis, draw_infrared=draw_ir)
            comps_lesson = dict(card=step_card, visible=visible, infrared=infrared, model=model,
                                complementary=complementary, random_masking=random_masking, dropout=dropout,
                                hole_percent=hole_percent, holes=holes, seed=seed)
            pair_outputs = [comps[n] for n in PAIR_OUTPUTS]
            # the pair handler runs after each event that sets an image (an upload, a cleared input, an
            # example click, a lesson step): one call each. Not on the images' change event, which
            # Gradio fires twice for one upload (tests/test_browser.py counts the calls).
            pair_handler = dict(fn=self.on_pair_change, inputs=[visible, infrared, hole_percent], outputs=pair_outputs,
                                api_visibility="private", queue=False, preprocess=False, show_progress="hidden")

            for src in (visible, infrared):
                # the clean pass is prefetched after an upload only: an example click or a lesson step
                # changes both images (a prefetch per change would run a mixed pair), and fuses itself
                uploaded = src.upload(self.on_input, [src], [src], api_visibility="private", preprocess=False,
                                      concurrency_id="upload", concurrency_limit=4, show_progress="hidden")
                uploaded.then(self.prefetch, [visible, infrared, model], None, preprocess=False,
                              concurrency_id="compute", show_progress="hidden", api_visibility="private")
                src.upload(**pair_handler)  # beside on_input, not after it: a refused file is described too
                src.clear(**pair_handler)
            for editor, src in ((draw_vis, visible), (draw_ir, infrared)):
                editor.clear(_editor_value, [src], [editor], api_visibility="private", queue=False,
                             preprocess=False)
            # The editors start empty, so that /fuse has no image defaults for an API client to
            # upload with every call (4 files, about 0.1 s a request: tools/lab_overheads.py); the panel gets the pair
            # when it opens, keeping a mask already painted.
            draw_panel.expand(_fill_editors, [visible, infrared, draw_vis, draw_ir], [draw_vis, draw_ir],
                              api_visibility="private", queue=False, preprocess=False, show_progress="hidden")
            hole_percent.change(self.hole_text, [visible, hole_percent], [hole_md], api_visibility="private",
                                queue=False, preprocess=False, show_progress="hidden", trigger_mode="always_last")
            model.change(_named(self.choose_model, MODEL_OUTPUTS), [model, state], [model, model_md, state],
                         api_visibility="private", concurrency_id="models").then(
                self.prefetch, [visible, infrared, model], None, preprocess=False,
                concurrency_id="compute", show_progress="hidden", api_visibility="private")
            # each page opened gets the start-up notice and default model as the background downloads stand
            demo.load(None, None, None, js=PHONE_GATES)
            demo.load(self.page_status, None, [startup_md, model, model_md], queue=False, api_name="model_status",
                      api_visibility="undocumented", show_progress="hidden")
            # the compare menu follows the main model, so any two models can be compared
            model.change(self.compare_choices, [model, other_model], [other_model], api_visibility="private",
                         queue=False, show_progress="hidden")
            # wiring: actions
            common = [visible, infrared, model, complementary, random_masking, dropout, hole_percent, holes, seed,
                      draw_vis, draw_ir]
            # The button is never disabled by a handler: a step that fails in the browser (a seed
            # out of range) or on the server would leave it disabled. Gradio ignores clicks while
            # the click's own event is pending (trigger_mode "once").
            # /fuse runs FUSE_WORKERS requests at once: their forwards still take turns in the one
            # compute slot, while a result the shared cache holds is answered without waiting for them
            fused = fuse_btn.click(
                gpu(_named(self.fuse, FUSE_OUTPUTS)), [*common, gate_scale, state], fuse_outputs, api_name="fuse",
                preprocess=False, concurrency_id="fuse", concurrency_limit=cb.FUSE_WORKERS,
                api_description="Fuse a visible/infrared pair without and with interventions; returns images, "
                                "per-level gate maps and captions, and notices (names and order: docs/API.md).")
            fused.success(self.metrics, [state], [table], api_name="metrics", concurrency_id="metrics",
                          show_progress="minimal")
            # on a phone the results sit above the controls: Fuse brings them into view (no server call),
            # and again when they arrive, since panels that appear meanwhile can move them
            to_results = ("() => { if (window.innerWidth <= 600) "
                          "document.querySelector('#results')?.scrollIntoView({behavior: 'smooth'}); }")
            fuse_btn.click(None, None, None, js=to_results)
            fused.then(None, None, None, js=to_results)
            # an example click shows that example's results at once: the pair is set, then fused with
            # the current controls (from the shared cache when anyone computed it: every example is
            # precomputed with the default controls)
            picked = gallery.select(self.pick_example, None, [visible, infrared], api_visibility="private",
                                    queue=False, show_progress="hidden")
            picked.then(**pair_handler)
            picked.then(
                gpu(_named(self.fuse, FUSE_OUTPUTS)), [*common, gate_scale, state], fuse_outputs, preprocess=False,
                concurrency_id="fuse", concurrency_limit=cb.FUSE_WORKERS, api_visibility="private").success(
                self.metrics, [state], [table], concurrency_id="metrics", show_progress="minimal",
                api_visibility="private")
            # -- lesson (H5): a step sets the pair and the controls; the student presses Fuse
            step_menu.change(self.on_step, [step_menu], [comps_lesson[n] for n in LESSON_OUTPUTS],
                             api_visibility="private", queue=False, show_progress="hidden").then(**pair_handler)
            gate_scale.change(_named(self.rerender, RENDER_OUTPUTS), [gate_scale, state], render_outputs,
                              api_name="render", concurrency_id="render", show_progress="hidden")
            dl_btn.click(self.downloads, [state], [files], api_name="downloads", concurrency_id="metrics")
            compare_btn.click(
                gpu(_named(self.compare, COMPARE_OUTPUTS)),
                [visible, infrared, model, other_model, *common[3:], gate_scale, state],
                [compare_fused, *compare_imgs, compare_md, state], api_name="compare", preprocess=False,
                concurrency_id="compute",
                api_description="Run one pair and intervention through two models; their fused images and gates "
                                "side by side.")
            stab_btn.click(
                gpu(_named(self.stability, STABILITY_OUTPUTS)), [*common, k_slider, gate_scale, state],
                [inst_img, gmean_img, feat_img, stab_md], api_name="stability", preprocess=False,
                concurrency_id="stability", concurrency_limit=1,
                api_description="Run K seeded interventions (within a time budget); returns the instability map, "
                                "the mean gate map, the feature-change maps and their correlations.")
            # cooperative: the run stops at its next intervention and says so (Gradio's `cancels`
            # would leave the worker thread computing and mark the outputs as errors)
            cancel_btn.click(self.cancel, [state], None, queue=False, api_visibility="private")
            # -- the in-browser Fuse (ivfusion/lab/browser.py): web_btn shows beside fuse_btn once the model has loaded
            self.browser = in_browser.wire(self, demo, web_btn, common, visible, infrared, gate_scale)
        return demo


def build_demo(bank: lab.ModelBank | None = None, max_size: int | None = None,
               concurrency: int | None = None, precompute: bool = True) -> gr.Blocks:
    """The app, with a bounded queue: at most `concurrency` computations at once (default 1:
    two CPU cores are best used by one request at a time) and `max_size` waiting (default 96:
    a class of 30 with a request or two each). Stability runs have their own group (one at a
    time), so they never take Fuse's queue place; every forward pass, whichever group runs
    it, holds the one compute slot (`ivfusion.lab.slot`), which a stability run takes one
    intervention at a time, so a Fuse waits for at most one intervention and two forwards
    never add up their memory. Queue places per visitor and per address: `ivfusion.lab.places`;
    HTTP bounds (bodies, uploads per client): `ivfusion.lab.guard`, installed by `launch`."""
    from gradio.utils import get_upload_folder

    from ivfusion.lab import guard, places

    lab.session.limit_malloc_arenas()  # before the model runs: bounds the peak RSS of a burst
    # A forward pass hands the GIL back and forth hundreds of times (once per torch call); with
    # Python's 5 ms switch interval, every busy thread beside it (the event loop serving a class,
    # a handler encoding images) makes each hand-back wait up to 5 ms: a 640x480 pass took 3.1 s
    # instead of 0.46 s beside one busy thread, 0.94 s at 0.5 ms (tools/pass_contention.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # no request holds the compute slot past this budget and one more step (ivfusion.lab.slot)
    lab.slot.COMPUTE.budget_s = lab.settings.env_number("IVFUSION_HOLD_BUDGET_S", lab.slot.HOLD_BUDGET_S, 1, 3600,
                                                        float)
    # settings first: a junk one stops the app before any model or thread starts
    concurrency = concurrency or lab.settings.env_number("IVFUSION_CONCURRENCY", 1, 1, 64)
    max_size = max_size or lab.settings.env_number("IVFUSION_QUEUE", 96, 1, 1000)
    hops = guard.proxy_hops()
    lab_app = LabApp(bank, precompute=precompute)
    lab_app.proxy_hops = hops  # the compute slot's fairness counts clients as the queue's places do
    demo = lab_app.build()
    demo.lab_app = lab_app  # for in-process benchmarks (ivfusion.bench.app)
    # api_open=False: a queued event cannot be called past the queue through /gradio_api/run/
    # (Gradio opens those routes off Spaces), so the queue's size, the places per visitor and
    # stability's one-at-a-time rule hold for every client; gradio_client goes through the queue.
    demo.queue(max_size=max_size, default_concurrency_limit=concurrency, api_open=False)
    demo.guard = guard.GuardState(hops=hops)
    # the page's own files (start-up results, thumbnails, Gradio's copies of them) are never evicted
    demo.guard.ledger.protect(get_upload_folder(), lab.session.static_dir())
    demo.places = places.QueuePlaces(demo, demo.guard)  # one visitor cannot hoard the queue
    # bounded session state, request files, disk (the upload folder included) and RSS
    demo.janitor = lab.session.Janitor(demo, upload_folder=get_upload_folder(), ledger=demo.guard.ledger).start()
    return demo


# max_threads: Gradio's 40 worker threads would leave few to the other events beside /fuse's 32
LAUNCH_KWARGS = dict(theme=gr.themes.Soft(), css=CSS, max_file_size="50mb", show_error=True,
                     footer_links=["api", "gradio"], max_threads=64)
LAUNCH_KWARGS["head"] = in_browser.head()  # the in-browser Fuse's script


def launch(demo: gr.Blocks, **kwargs):
    """`demo.launch` with the Lab's HTTP bounds (`ivfusion.lab.guard.Guard`) in front of every route."""
    from starlette.middleware import Middleware

    from ivfusion.lab import guard

    guard.quiet_refusals()
    return demo.launch(**LAUNCH_KWARGS, app_kwargs={"middleware": [Middleware(guard.Guard, state=demo.guard)]},
                       **kwargs)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    try:
        threads = lab.settings.env_number("IVFUSION_THREADS", 0, 0, 1024)
        if threads:
            import torch

            torch.set_num_threads(threads)
        if not os.environ.get("GRADIO_TEMP_DIR"):  # Gradio's upload folder inside this process's private one
            os.environ["GRADIO_TEMP_DIR"] = str(lab.session.lab_folder() / "gradio")
        else:
            lab.session.check_private(os.environ["GRADIO_TEMP_DIR"], "GRADIO_TEMP_DIR")
        demo = build_demo()
    except ValueError as e:  # a junk setting: one line, not a traceback
        raise SystemExit(f"app.py: {e}") from None
    import atexit
    import signal

    atexit.register(lab.session.cleanup_at_exit, demo.guard.ledger)

    def on_sigterm(*_):
        # clean up, then leave at once: an interpreter shutdown while a background thread is in
        # torch (the start-up precompute, a download) aborts the process (SIGABRT) instead
        lab.session.cleanup_at_exit(demo.guard.ledger)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    launch(demo)


if __name__ == "__main__":
    main()
