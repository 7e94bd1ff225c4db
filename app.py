"""ISFuse Intervention Lab: fuse infrared/visible pairs, intervene, and watch the invariance gates.

Run `python app.py` (then open http://127.0.0.1:7860). It runs offline on the bundled
weights and examples. This file only draws widgets and wires them; the logic lives in
`ivfusion.lab` (runs, stability, metrics, downloads) and `ivfusion.viz` (heat maps).

Environment: IVFUSION_WEIGHTS (default model: a path or hf://owner/repo; the bundled file is
the fallback), IVFUSION_OFFICIAL_WEIGHTS (offers the authors' checkpoint), IVFUSION_MAX_SIDE
(downscale limit, default 1024), IVFUSION_THREADS (torch threads), IVFUSION_CONCURRENCY
(requests computed at once, default 1), IVFUSION_QUEUE (queue size, default 16),
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio's own).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import functools  # noqa: E402
import logging  # noqa: E402

import gradio as gr  # noqa: E402

from ivfusion import lab, viz  # noqa: E402
from ivfusion.hub import WeightsError  # noqa: E402
from ivfusion.io import ImageError  # noqa: E402

try:  # Hugging Face ZeroGPU Spaces: run the heavy callbacks on a GPU when one is lent
    import spaces

    gpu = spaces.GPU
except Exception:  # noqa: BLE001 - no `spaces` package (local run, CPU Space): a no-op
    def gpu(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)

log = logging.getLogger("ivfusion.app")

PAPER = "https://arxiv.org/abs/2603.23272"
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

INTRO = f"""
# ISFuse Intervention Lab
Fuse an **infrared** and a **visible** image with ISFuse ([Wang et al., CVPR 2026]({PAPER})), then
*intervene*: hide parts of an input or drop a whole modality, and see what changes in the fused image
and in the model's **invariance gates**, the maps that say where the model trusts cross-modal features.
Load a pair (or click an example), choose interventions, press **Fuse**. The *How it works* tab explains it all.
"""

HOW_IT_WORKS = rf"""
## What the model does
ISFuse fuses a registered pair: the **infrared** image $I$ (heat: people and engines glow, in the dark too)
and the **visible** image's luminance $V$ (texture, colour, light). Both are grey images in $[0, 1]$.
Two encoders turn them into features $f_{{vi}}, f_{{ir}}$ at three scales (full, 1/2 and 1/4 resolution).
At each scale a **Causal Feature Integrator (CFI)** merges them, and a decoder turns the merged features
into the fused luminance $F$; the visible image's colour is put back at the end.

## The CFI and its invariance gate
Each CFI computes two candidate merges of the features:

* **cross**: cross-attention. Each visible pixel looks at the infrared features (pooled to an
  $8\times 8$ grid of 64 tokens) and the other way round:
  $$\text{{cross}} = A(Q_{{vi}}, K_{{ir}}, V_{{ir}}) + A(Q_{{ir}}, K_{{vi}}, V_{{vi}}),\qquad
  A(Q,K,V) = \operatorname{{softmax}}\!\left(\frac{{Q^\top K}}{{\sqrt{{C}}}}\right) V$$
* **local**: the plain sum $f_{{vi}} + f_{{ir}}$.

The **invariance gate** $g \in [0, 1]$ (one value per pixel, computed from *cross*) chooses between them:
$$\text{{fused}} = g \cdot \text{{cross}} + (1 - g) \cdot \text{{local}}$$
Training pushes $g$ up where the cross-modal features **stay the same when the inputs are intervened on**
(the "intervention-stable", causal features) and down elsewhere. The lab shows $g$ at all three scales as
heat maps over the visible image: yellow = gate open (cross-attention used), dark = closed (plain sum).

## The three interventions
Masks are made of square holes of *mask size* pixels (paper: 16), 1 to 6 per mask; black pixels in
"what the network saw" are hidden ones.

| intervention | the network sees | question it asks |
|---|---|---|
| complementary masking | $(V \odot M_v,\; I \odot M_i)$, $M_v$ and $M_i$ never hide the same pixel | can each modality make up for what the other lost? |
| random masking | $(V \odot M,\; I \odot M)$, one mask for both | which features survive partial observation? |
| modality dropout | $(0,\; I)$ or $(V,\; 0)$ | what does each modality contribute alone? |

In the lab they combine (e.g. complementary masking + drop IR), and you can paint your own mask:
hide a pedestrian in the infrared image and see whether the visible image compensates.

## The losses (how training shapes the gates)
* **Fusion loss**, keep the intensities and the sharpest edges of both sources
  ($\nabla^2$ is the Laplacian): $$L_f = \lVert F - I\rVert_1 + \lVert F - V\rVert_1 + \lambda_1 \big\lVert\, |\nabla^2 F| - \max(|\nabla^2 I|, |\nabla^2 V|) \big\rVert_1$$
* **Intervention loss**, for $d$ in {{complementary, random}}: the output $F_d$ of the intervened pair must
  stay close to $F$ *where the gate is open* ($\bar G_d$: the three gates averaged), and the gate is kept
  decisive with a mean near $\eta = 0.3$:
  $$L_{{inv}} = \tfrac12 \textstyle\sum_d \Big[\operatorname{{mean}}\big(|F_d - F| \odot \bar G_d\big) + R(\bar G_d)\Big],\qquad
  R(\bar G) = \big|\operatorname{{mean}}(\bar G) - \eta\big| - H(\bar G)$$
  ($H$ is the binary entropy; subtracting it pushes gate values away from 0.5.)
* **Necessity loss**, from the two dropout outputs: $L_{{nec}} = \lVert F - F_{{ir\,only}}\rVert_1 + \lVert F - F_{{vi\,only}}\rVert_1$
  (the authors' code; the paper's text describes it as each modality's unique contribution).
* Total: $L = L_f + \alpha L_{{inv}} + \beta L_{{nec}}$ with $\alpha = 0.1$, $\beta = 0.05$.

## Reading the lab
* **Difference map** $|F_{{intervened}} - F_{{clean}}|$ in grey levels (0 to 255): where the intervention changed the output.
* **Gate maps**, clean and intervened pass: each caption gives the mean activation next to $\eta = 0.3$, the
  target of the regulariser. Gates that barely move under an intervention mark features the model considers stable.
* **Stability analysis** runs $K$ random interventions and shows the per-pixel standard deviation of $F$
  (instability) next to the mean gate map, with their correlation $r$. The paper's claim, that gated features
  are the intervention-stable ones, predicts a **negative** $r$ for a trained model: where the gate is open,
  the output should vary less. The untrained network shows no such relation.
* **Metrics**: the eleven standard fusion metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR, CC) of both
  outputs against the *unmasked* sources; all are "higher is better".

## Paper and code
X. Wang, Z. Guan, W. Qian, C. Wang, R. Ma, *Multi-Modal Image Fusion via Intervention-Stable Feature
Learning*, CVPR 2026, [arXiv:2603.23272]({PAPER}). This lab is part of the `ivfusion` package, an independent
implementation. Example pairs: MSRS (MIT licence) and RoadScene; see `assets/examples/README.md`.
"""

CSS = """
.lab-note {font-size: 0.95em}
#fuse-btn {min-height: 3em; font-size: 1.1em}
"""


def _user_errors(fn):
    """Turn every failure into a readable gr.Error (never a traceback in the browser)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ImageError, WeightsError, ValueError) as e:
            raise gr.Error(str(e), title="Cannot use this input") from None
        except MemoryError:
            raise gr.Error("Out of memory: the image is too large for this machine. Try a smaller one.",
                           title="Out of memory") from None
        except Exception as e:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {e}). Please report it with the images used.",
                           title="Unexpected error") from None

    return wrapper


# the gate colour scales as the page names them, in the order of viz.GATE_SCALES
GATE_SCALE_CHOICES = ("fixed 0 to 1", "stretched per level")


def _gate_scale(choice: str | None) -> str:
    """viz.GATE_SCALES name of a page choice (the viz names are accepted too, for API callers)."""
    names = dict(zip(GATE_SCALE_CHOICES, viz.GATE_SCALES)) | {n: n for n in viz.GATE_SCALES}
    if choice not in names:
        raise ValueError(f"gate colour scale must be one of {', '.join(GATE_SCALE_CHOICES)}, got {choice!r}")
    return names[choice]


def _editor_value(path: str | None):
    return {"background": path, "layers": [], "composite": path} if path else None


class LabApp:
    """The app's callbacks, bound to one ModelBank (shared, read-only models). Each callback
    takes the widgets' values and returns theirs; no per-user state lives here."""

    def __init__(self, bank: lab.ModelBank | None = None):
        self.bank = bank or lab.ModelBank()
        self.default_model, self.startup_notes = self.bank.default_choice()

    # -- inputs
    @_user_errors
    def on_input(self, source):
        """An image was uploaded: check it, and replace it by a lossless PNG copy when the browser
        cannot show the file (TIFF; 16-bit depth is kept)."""
        if source is None:
            return gr.update()
        lab.load_image(source, "image")  # a corrupt upload is reported now, not at Fuse time
        png = lab.display_copy(source, lab.request_dir())
        return png if png else gr.update()

    def info(self, visible, infrared):
        """The pair description under the inputs; a bad image is described there (the upload
        handler and Fuse raise the error)."""
        try:
            return lab.pair_info(visible, infrared, self.bank.max_side)
        except (ImageError, ValueError) as e:
            return f"**Cannot use this pair:** {e}"

    def prefetch(self, visible, infrared, model, session):
        """A pair was loaded (or the model changed): compute its clean pass now, into this
        session's state, so that Fuse only has the intervened pass left to run. Silent: bad
        inputs are reported by the pair info and by Fuse."""
        if visible is None or infrared is None:
            return gr.skip()
        try:
            fuser, _ = self.bank.get(model)
            vis, ir = lab.load_image(visible, "visible image"), lab.load_image(infrared, "infrared image")
            session = dict(session or {})
            if not lab.prefetch_clean(fuser, vis, ir, model or lab.DEFAULT_CHOICE, session.setdefault("cache", {})):
                return gr.skip()
        except Exception:  # noqa: BLE001 - a prefetch must never bother the user
            log.debug("prefetch skipped", exc_info=True)
            return gr.skip()
        return session

    def model_info(self, model):
        try:
            fuser, notes = self.bank.get(model)
        except WeightsError as e:
            return f"**{model}** cannot be loaded: {e}"
        return f"Weights: `{fuser.weights_source}` · {fuser.path} path on {fuser.device}. " + " ".join(notes)

    def _inputs(self, visible, infrared, model, complementary, random_masking, dropout, mask_size, holes, seed,
                draw_visible, draw_infrared):
        vis = lab.load_image(visible, "visible image")
        ir = lab.load_image(infrared, "infrared image")
        settings = lab.Settings(complementary, random_masking, dropout or "none", mask_size, holes, int(seed or 0))
        drawn = (lab.drawn_keep_mask(draw_visible), lab.drawn_keep_mask(draw_infrared))
        fuser, notes = self.bank.get(model)
        return fuser, notes, vis, ir, settings, drawn

    # -- actions
    @_user_errors
    def fuse(self, visible, infrared, model=lab.DEFAULT_CHOICE, complementary=True, random_masking=False,
             dropout="none", mask_size=16, holes=3, seed=0, draw_visible=None, draw_infrared=None, session=None,
             gate_scale=GATE_SCALE_CHOICES[0]):
        """Fuse the pair without and with the interventions. Returns, in order: the compare
        slider (clean, intervened), fused clean, fused intervened, the visible and infrared
        inputs the network saw, the difference heat map, six gate heat maps (clean levels 1-3,
        intervened levels 1-3), notices (Markdown), the download files, and the session state
        (this user's last run for the metrics, and the clean pass to reuse; never shared).
        gate_scale: the gate maps' colour scale, "stretched per level" or "fixed 0 to 1"."""
        fuser, notes, vis, ir, settings, drawn = self._inputs(
            visible, infrared, model, complementary, random_masking, dropout, mask_size, holes, seed,
            draw_visible, draw_infrared)
        session = dict(session or {})
        cache = session.setdefault("cache", {})
        run = lab.run_pair(fuser, vis, ir, settings, drawn, model=model or lab.DEFAULT_CHOICE, cache=cache)
        figs = lab.render(run, _gate_scale(gate_scale))
        files = lab.write_downloads(run, lab.request_dir())
        notices = [n for n in notes if not n.startswith("The untrained")] + run.notices
        notices.append(f"Model: {model or lab.DEFAULT_CHOICE}. Computed in {run.seconds:.2f} s.")
        return (
            (figs.fused_clean, figs.fused_intervened),
            figs.fused_clean,
            figs.fused_intervened,
            figs.input_visible,
            figs.input_infrared,
            figs.difference,
            *figs.gates,
            "  \n".join(notices),
            files,
            {**session, "metrics": lab.metric_sources(run)},
        )

    @_user_errors
    def metrics(self, state):
        """The eleven metrics of the last fuse in this session (clean, intervened, change)."""
        if not state or "metrics" not in state:
            raise gr.Error("Fuse a pair first.", title="Nothing to measure")
        return lab.metrics_table(state["metrics"])

    @_user_errors
    def stability(self, visible, infrared, model=lab.DEFAULT_CHOICE, complementary=True, random_masking=False,
                  dropout="none", mask_size=16, holes=3, seed=0, draw_visible=None, draw_infrared=None, k=8,
                  gate_scale=GATE_SCALE_CHOICES[0], progress=gr.Progress()):
        """Run K seeded interventions. Returns the instability map, the mean gate map, and a
        Markdown summary with their correlation."""
        fuser, notes, vis, ir, settings, drawn = self._inputs(
            visible, infrared, model, complementary, random_masking, dropout, mask_size, holes, seed,
            draw_visible, draw_infrared)
        k = int(k)
        if not 4 <= k <= 32:
            raise gr.Error(f"K must be from 4 to 32, got {k}.")
        progress(0.0, desc=f"0 of {k} interventions")
        res = lab.stability(fuser, vis, ir, settings, k, drawn,
                            progress=lambda done, total: progress(done / total, desc=f"{done} of {total} interventions"))
        inst, gate, text = lab.stability_figures(res, _gate_scale(gate_scale))
        return inst, gate, text

    # -- layout
    def build(self) -> gr.Blocks:
        examples = lab.example_pairs()
        png = dict(format="png", buttons=["download", "fullscreen"])
        panel = dict(format="png", buttons=["fullscreen"], show_label=False, interactive=False)
        with gr.Blocks(title="ISFuse Intervention Lab", delete_cache=(3600, 3600)) as demo:
            state = gr.State(None, time_to_live=3600)
            gr.Markdown(INTRO)
            if self.startup_notes:
                gr.Markdown("**Note:** " + " ".join(self.startup_notes), elem_classes="lab-note")
            with gr.Tab("Lab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        with gr.Row():
                            visible = gr.Image(label="Visible image", type="filepath", image_mode=None,
                                               sources=["upload", "clipboard"], elem_id="visible-input", **png)
                            infrared = gr.Image(label="Infrared image", type="filepath", image_mode=None,
                                                sources=["upload", "clipboard"], elem_id="infrared-input", **png)
                        pair_md = gr.Markdown(lab.pair_info(None, None), elem_id="pair-info", elem_classes="lab-note")
                        gr.Examples(
                            examples=[[v, i] for v, i, _ in examples], inputs=[visible, infrared],
                            example_labels=[label for _, _, label in examples], label="Example pairs (click one)",
                            examples_per_page=8, cache_examples=False,
                        )
                    with gr.Column(scale=2, min_width=320):
                        model = gr.Dropdown(self.bank.choices(), value=self.default_model, label="Model")
                        model_md = gr.Markdown(self.model_info(self.default_model), elem_classes="lab-note")
                        gr.Markdown("**Interventions** (they combine)")
                        with gr.Row():
                            complementary = gr.Checkbox(True, label="Complementary masking")
                            random_masking = gr.Checkbox(False, label="Random masking")
                        dropout = gr.Radio(list(lab.DROPOUT_CHOICES), value="none", label="Modality dropout")
                        with gr.Row():
                            mask_size = gr.Slider(4, 64, value=16, step=4, label="Mask size (pixels)")
                            holes = gr.Slider(1, 6, value=3, step=1, label="Holes per mask")
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                        fuse_btn = gr.Button("Fuse", variant="primary", elem_id="fuse-btn")
                with gr.Accordion("Draw your own mask (optional): paint over an input to hide it", open=False):
                    gr.Markdown("Painted pixels are hidden from the network (multiplied by 0), on top of the "
                                "interventions above. Example: hide a pedestrian in the infrared image and see whether "
                                "the visible image compensates.", elem_classes="lab-note")
                    brush = gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=24)
                    with gr.Row():
                        draw_vis = gr.ImageEditor(label="Mask over the visible image", type="filepath", sources=[],
                                                  brush=brush, layers=False, transforms=[], format="png",
                                                  elem_id="draw-visible")
                        draw_ir = gr.ImageEditor(label="Mask over the infrared image", type="filepath", sources=[],
                                                 brush=brush, layers=False, transforms=[], format="png",
                                                 elem_id="draw-infrared")
                notices = gr.Markdown(elem_id="notices", elem_classes="lab-note")
                gr.Markdown("### Fused images\nLeft: without intervention. Right: with it. Drag the slider to compare.")
                with gr.Row(equal_height=True):
                    fused_clean = gr.Image(label="Fused, no intervention", interactive=False, elem_id="fused-clean", **png)
                    fused_int = gr.Image(label="Fused, with intervention", interactive=False, elem_id="fused-intervened",
                                         **png)
                    compare = gr.ImageSlider(label="Compare: clean | intervened", format="png", interactive=False,
                                             elem_id="compare")
                gr.Markdown("### What the network saw, and what changed\nThe inputs after the intervention "
                            "(black = hidden), and |F_intervened - F_clean|.")
                with gr.Row(equal_height=True):
                    in_vis = gr.Image(label="Visible input as fed (Y)", interactive=False,
                                      elem_id="input-visible", **png)
                    in_ir = gr.Image(label="Infrared input as fed", interactive=False,
                                     elem_id="input-infrared", **png)
                    diff = gr.Image(label="Difference map", elem_id="difference", **panel)
                gr.Markdown("### Invariance gates\nWhere each CFI level uses cross-attended features (yellow, gate open) "
                            "instead of the plain sum (dark). Top: clean pass. Bottom: intervened pass. "
                            "The red line on each colour bar is the target mean \u03b7 = 0.3. Trained gates "
                            "stay within a few hundredths of \u03b7, which the 0 to 1 scale shows as nearly one "
                            "colour: the stretched scale spans each level's 1st to 99th percentile (shared by "
                            "its clean and intervened maps) and shows where the gates open more.")
                gate_scale = gr.Radio(list(GATE_SCALE_CHOICES), value=GATE_SCALE_CHOICES[0],
                                      label="Gate colour scale", elem_id="gate-scale")
                gate_imgs = []
                for row_name in ("clean", "intervened"):
                    with gr.Row(equal_height=True):
                        for k in range(3):
                            gate_imgs.append(gr.Image(label=f"{row_name} pass, gate level {k + 1}",
                                                      elem_id=f"gate-{row_name}-{k + 1}", elem_classes="gate-map",
                                                      **panel))
                with gr.Row():
                    with gr.Column(scale=3):
                        gr.Markdown("### Metrics\nBoth outputs against the unmasked sources; change = intervened - clean.")
                        table = gr.Dataframe(headers=lab.METRIC_HEADERS, interactive=False, elem_id="metrics",
                                             column_count=len(lab.METRIC_HEADERS))
                    with gr.Column(scale=2):
                        gr.Markdown("### Downloads\nFused images (lossless PNG) and the gate maps (`.npz`, "
                                    "with masks and the difference map).")
                        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                gr.Markdown("### Stability analysis\nRuns K random interventions (seeded, with the mask size and holes "
                            "above) and shows where the fused image varies (instability) next to where the gates are "
                            "open. The paper claims the gated features are the stable ones: then r is negative.")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=240):
                        k_slider = gr.Slider(4, 32, value=8, step=1, label="K interventions", elem_id="k-slider")
                        stab_btn = gr.Button("Run stability analysis", variant="secondary", elem_id="stability-btn")
                        stab_md = gr.Markdown(elem_id="stability-text", elem_classes="lab-note")
                    inst_img = gr.Image(label="Instability map", elem_id="instability", scale=2, **panel)
                    gmean_img = gr.Image(label="Mean gate map", elem_id="mean-gate", scale=2, **panel)
            with gr.Tab("How it works"):
                gr.Markdown(HOW_IT_WORKS, latex_delimiters=LATEX)

            # wiring
            for src, editor in ((visible, draw_vis), (infrared, draw_ir)):
                src.upload(self.on_input, [src], [src], api_visibility="private", queue=False, preprocess=False)
                src.change(self.info, [visible, infrared], [pair_md], api_visibility="private", queue=False,
                           preprocess=False)
                src.change(lambda s: _editor_value(lab.source_path(s)), [src], [editor], api_visibility="private",
                           queue=False, preprocess=False)
            model.change(self.model_info, [model], [model_md], api_visibility="private")
            for trigger in (visible.change, infrared.change, model.change):
                trigger(self.prefetch, [visible, infrared, model, state], [state], preprocess=False,
                        concurrency_id="compute", show_progress="hidden", trigger_mode="always_last",
                        api_visibility="private")
            common = [visible, infrared, model, complementary, random_masking, dropout, mask_size, holes, seed,
                      draw_vis, draw_ir]
            fuse_outputs = [compare, fused_clean, fused_int, in_vis, in_ir, diff, *gate_imgs, notices, files, state]
            fuse_btn.click(
                gpu(self.fuse), [*common, state, gate_scale], fuse_outputs, api_name="fuse", preprocess=False, concurrency_id="compute",
                api_description="Fuse a visible/infrared pair without and with interventions; returns images, gate "
                                "heat maps, notices and download files.",
            ).success(self.metrics, [state], [table], api_name="metrics", concurrency_id="metrics")
            stab_btn.click(
                gpu(self.stability), [*common, k_slider, gate_scale], [inst_img, gmean_img, stab_md], api_name="stability",
                preprocess=False, concurrency_id="compute",
                api_description="Run K seeded interventions; returns the instability map, the mean gate map and "
                                "their correlation.",
            )
        return demo


def build_demo(bank: lab.ModelBank | None = None, max_size: int | None = None,
               concurrency: int | None = None) -> gr.Blocks:
    """The app, with a bounded queue: at most `concurrency` computations at once (default 1:
    two CPU cores are best used by one request at a time) and `max_size` waiting."""
    demo = LabApp(bank).build()
    concurrency = concurrency or int(os.environ.get("IVFUSION_CONCURRENCY") or 1)
    max_size = max_size or int(os.environ.get("IVFUSION_QUEUE") or 16)
    return demo.queue(max_size=max_size, default_concurrency_limit=concurrency)


LAUNCH_KWARGS = dict(theme=gr.themes.Soft(), css=CSS, max_file_size="50mb", show_error=True,
                     footer_links=["api", "gradio"])


def main() -> None:
    threads = os.environ.get("IVFUSION_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    logging.basicConfig(level=logging.INFO)
    build_demo().launch(**LAUNCH_KWARGS)


if __name__ == "__main__":
    main()
