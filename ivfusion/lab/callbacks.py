"""The Lab's callbacks: widget values in, named outputs out (`app.py` draws the widgets).

Every callback returns a dict keyed by output *names*; `app.py` turns it into Gradio's order
with the name tuples defined here (`FUSE_OUTPUTS`, `RENDER_OUTPUTS`, `STABILITY_OUTPUTS`),
which docs/API.md documents for gradio_client users. Per-user state lives in the session
dict (a `gr.State`): "run" (the last `runs.LabRun`, re-rendered when a display option
changes), "result_key" (its key in the shared result cache, whose entry keeps its metrics)
and "cancel" (a `threading.Event` a stability run watches). What does not depend on who asked
(a pair's clean pass and features, a finished result) is shared through `cache`, by content.

Every forward pass, and the full decode before it, runs inside the one compute slot
(`slot.COMPUTE`): Fuse, compare and prefetch hold it for their work, a stability analysis for
one intervention at a time, so two large forwards never add up their memory and a Fuse waits
for at most one stability intervention.
"""
from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from .. import viz
from ..hub import WeightsError
from ..io import ImageError
from ..levels import GATE_LEVELS
from . import analysis, cache, downloads, examples, lesson, models, render, runs, session, settings, uploads
from .guard import client_key
from .slot import COMPUTE

log = logging.getLogger("ivfusion.app")

# The display re-render (a display option changed): the gate maps, one row per level
# (clean | intervened | change, coarse to fine, in one picture: one file to send), and their captions.
RENDER_OUTPUTS = ("gates", "gate_captions")
# /fuse, in Gradio's order; the API returns all but the last ("state" stays on the server).
FUSE_OUTPUTS = ("fused_clean", "fused_intervened", "difference", "difference_caption", "inputs",
                *RENDER_OUTPUTS, "notices", "state")
STABILITY_OUTPUTS = ("instability", "mean_gate", "features", "summary")
# a new image in either input: the pair's description, the hole size and the mask editors
# emptied, in one unqueued request (app.LabApp.on_pair_change); the results stay until Fuse
PAIR_OUTPUTS = ("pair_info", "hole_text", "draw_visible", "draw_infrared")
# a lesson step picked (app.LabApp.on_step): its card, the pair and the controls it sets
LESSON_OUTPUTS = ("card", "visible", "infrared", "model", "complementary", "random_masking", "dropout", "hole_percent",
                  "holes", "seed")
# a model was chosen: its description, the menu (back to the session's last usable model when
# this one cannot be loaded) and the session state
MODEL_OUTPUTS = ("model", "model_info", "state")
# /compare: one pair and intervention through two models
COMPARE_OUTPUTS = ("compare_fused", *(f"compare_{lv.key}" for lv in GATE_LEVELS), "compare_summary", "state")
# A stability run's time budget, in seconds per 8 interventions (checked between them): it stops
# there and shows the runs done, so that one visitor's analysis cannot hold the machine for
# minutes. Per 8, so that the largest K finishes too: a 640x480 K=32 run took 19-21 runs' worth of
# a flat 30 s (a 1024 px K=32 run took 76 s on a 2-CPU machine). Others' Fuse goes first between
# interventions, so a longer run delays no one by more than one intervention.
# IVFUSION_STABILITY_BUDGET_S overrides it.
STABILITY_BUDGET_S = 30.0
STABILITY_BUDGET_PER = 8
EXPIRED = "Your last result has expired (results are kept for a limited time): press Fuse again."
# /fuse requests handled at once: a class of 30 with a request each all get a handler, so an
# answer from the cache, or a result another request is computing, never waits for a handler
# behind forwards; the forwards themselves take turns in the compute slot, in its order
# (slot.py). A handler waiting for the slot holds no large array.
FUSE_WORKERS = 32
SLOW_WAIT_S = 0.5  # a wait for the compute slot longer than this is reported on the page
DEFAULTS = dict(complementary=True, random_masking=False, dropout="none", hole_percent=settings.DEFAULT_HOLE_PERCENT,
                holes=settings.DEFAULT_HOLES, seed=0, gate_scale=render.DEFAULT_GATE_SCALE)


def user_errors(fn):
    """Turn every failure into a readable gr.Error (never a traceback in the browser)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            e.print_exception = False  # a user error: no traceback in the server log
            raise
        except (ImageError, WeightsError, ValueError) as e:
            raise gr.Error(str(e), title="Cannot use this input", print_exception=False) from None
        except MemoryError:
            raise gr.Error("Out of memory: the image is too large for this machine. Try a smaller one.",
                           title="Out of memory", print_exception=False) from None
        except Exception as e:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {e}). Please report it with the images used.",
                           title="Unexpected error") from None

    return wrapper


def ordered(names: tuple[str, ...], out: dict[str, Any]) -> tuple:
    """A callback's named outputs in Gradio's order."""
    return tuple(out[n] for n in names)


class LabCallbacks:
    """The callbacks, bound to one ModelBank (shared, read-only models); per-user state comes
    in and goes out through the session dict. The default example's result is computed once,
    at start-up, so the first page already shows what the Lab is about."""

    def __init__(self, bank: models.ModelBank | None = None, precompute: bool = True,
                 stability_budget_s: float | None = None):
        self.bank = bank or models.ModelBank()
        self.stability_budget_s = float(stability_budget_s if stability_budget_s is not None else settings.env_number(
            "IVFUSION_STABILITY_BUDGET_S", STABILITY_BUDGET_S, 1, 3600, float))
        cache.configure()
        self.default_model, self.startup_notes = self.bank.default_choice()
        self.static_dir = session.static_dir()
        pairs = {Path(v).stem: (v, i) for v, i, _ in examples.example_pairs()}
        self.default_pair = pairs.get(examples.DEFAULT_EXAMPLE) or next(iter(pairs.values()), (None, None))
        self.default_run: runs.LabRun | None = None
        self.last_timings: dict[str, float] = {}  # of the last /fuse, for `ivfusion bench --app`
        self.proxy_hops = 0  # trusted proxies in front (app.build_demo sets IVFUSION_PROXY_HOPS's value)
        self.default_outputs: dict[str, Any] = {}
        self.default_metrics: list[list] | None = None
        # sessions that have had a result (bounded): to tell "expired" from "never fused"
        self._had_result: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.precomputed = threading.Event()  # set once the background precompute is over
        if precompute and self.default_pair[0]:
            try:
                out = self._fuse_named(*self.default_pair, self.default_model, folder=self.static_dir, **DEFAULTS)
                self.default_run = out["state"]["run"]
                self.default_outputs = out
                self.default_metrics = downloads.metrics_table(self.default_run)
            except Exception:  # noqa: BLE001 - the page then opens empty, as before
                log.exception("could not precompute the default example")
            threading.Thread(target=self._precompute_rest, name="ivfusion-lab-precompute", daemon=True).start()
        else:
            self.precomputed.set()

    def _precompute_rest(self) -> None:
        """In the background, after start-up: the lesson's steps and every example with the
        default controls, into the shared result cache, so that a step or an example click
        shows its result at once. Each takes the compute slot in turn with the visitors'
        requests (as one more client: `slot.ComputeSlot`). The authors' checkpoint is never fetched for it."""
        jobs = [(self.default_pair, {**DEFAULTS, **st.controls}) for st in lesson.STEPS if not st.needs_download]
        jobs += [((v, i), {**DEFAULTS, "model": self.default_model}) for v, i, _ in examples.example_pairs()]
        for (v, i), controls in jobs:
            try:
                self._fuse_named(v, i, **controls)
            except Exception:  # noqa: BLE001 - a precomputed result is a convenience only
                log.debug("precompute skipped", exc_info=True)
        self.precomputed.set()

    # -- helpers
    def _settings(self, complementary, random_masking, dropout, hole_percent, holes, seed) -> settings.Settings:
        return settings.Settings(complementary, random_masking, dropout or "none", hole_percent, holes,
                                 0 if seed is None else seed)

    def _model_id(self, model) -> str:
        """The model as the caches know it: the menu choice, its weights and the working size."""
        fuser, _ = self.bank.get(model)
        return f"{model or models.DEFAULT_CHOICE}|{fuser.weights_source}|{self.bank.max_side}"

    @staticmethod
    def _pair_id(visible, infrared) -> str:
        """The pair's content key ("" when an image is missing: the decode then says so)."""
        vis, ir = cache.content_key(visible, "visible image"), cache.content_key(infrared, "infrared image")
        return f"{vis}|{ir}" if vis and ir else ""

    def _pair(self, visible, infrared, model, pair_id: str | None = None) -> runs.SharedPair:
        """The pair under `model` with its clean pass and clean features, from the shared cache
        (`cache.PAIRS`) or decoded (at most at the working size: no full-size array is kept)
        and computed now. Call inside the compute slot."""
        fuser, _ = self.bank.get(model)
        pair_id = self._pair_id(visible, infrared) if pair_id is None else pair_id
        key = cache.pair_cache_key(self._model_id(model), pair_id) if pair_id else None
        pair = cache.PAIRS.get(key) if key else None
        if pair is None:
            vis, ir, notes = uploads.load_pair(visible, infrared, self.bank.max_side)
            pair = runs.SharedPair(fuser, vis, ir, model or models.DEFAULT_CHOICE, notes)
            if key:
                cache.PAIRS.put(key, pair)
        return pair

    def _remember(self, request) -> None:
        sh = getattr(request, "session_hash", None)
        if sh:
            self._had_result[sh] = None
            self._had_result.move_to_end(sh)
            while len(self._had_result) > session.MAX_SESSIONS * 10:
                self._had_result.popitem(last=False)

    def _last_run(self, state, request, key: str = "run"):
        """This session's last run (or `key` entry); the precomputed default result for a session
        that never fused; a gr.Error saying so when the session's result was dropped (the
        Janitor's bounds or the state's time to live)."""
        value = state.get(key) if isinstance(state, dict) else None
        if value is not None:
            return value
        if getattr(request, "session_hash", None) in self._had_result:
            raise gr.Error(EXPIRED, title="Result expired", print_exception=False)
        return None

    def client_of(self, request) -> str | None:
        """The client a request comes from, for the compute slot's fairness (`slot.ComputeSlot`):
        its address as the queue's places count it (`guard.client_key`, with the proxy hops
        that `app.build_demo` sets); None when there is no request (the Lab's own work)."""
        scope = getattr(getattr(request, "request", None), "scope", None)
        return client_key(scope, self.proxy_hops) if scope else None

    # -- actions
    def _fuse_named(self, visible, infrared, model=None, complementary=True, random_masking=False, dropout="none",
                    hole_percent=settings.DEFAULT_HOLE_PERCENT, holes=settings.DEFAULT_HOLES, seed=0,
                    draw_visible=None, draw_infrared=None, gate_scale=render.DEFAULT_GATE_SCALE, state=None,
                    folder: Path | None = None, progress=None, owner: str | None = None) -> dict[str, Any]:
        s = self._settings(complementary, random_masking, dropout, hole_percent, holes, seed)
        scale = render.gate_scale_name(gate_scale)  # a bad choice fails before any work
        state = state if isinstance(state, dict) else {}
        self.bank.get(model)  # a first load (a download) happens outside the compute slot
        t0 = time.perf_counter()
        pair_id = self._pair_id(visible, infrared)
        # a drawn mask is the visitor's own: such a request is computed, never cached
        drawn_any = _has_layers(draw_visible) or _has_layers(draw_infrared)
        key = cache.result_key(self._model_id(model), pair_id, s, scale) if pair_id and not drawn_any else None
        entry = cache.RESULTS.get(key) if key else None
        waited, steps = 0.0, {}
        while entry is None:
            flight, owner = cache.FLIGHTS.join(key) if key else (None, True)
            _say_if_waiting(progress)
            if not owner:  # the same result is being computed for someone else: wait for it
                t1 = time.perf_counter()
                entry = flight.wait()  # None: that computation failed, so this one tries
                waited += time.perf_counter() - t1
                continue
            try:
                with COMPUTE.hold("fuse", (lambda: flight.waiters) if flight else None, owner) as w:
                    waited += w
                    # a request ahead of this one in the slot may have computed the same result
                    entry = cache.RESULTS.get(key) if key else None
                    if entry is None:
                        t1 = time.perf_counter()
                        drawn = (uploads.drawn_keep_mask(draw_visible), uploads.drawn_keep_mask(draw_infrared))
                        pair = self._pair(visible, infrared, model, pair_id)
                        t2 = time.perf_counter()
                        run = runs.run_session_pair(pair, s, drawn)
                        steps = {"pair": t2 - t1, "run": time.perf_counter() - t2}
                if entry is None:
                    entry, more = _finished(run, scale, pair.load_notices)
                    steps.update(more)
                    if key:
                        run.shared = True  # held once by the cache, whatever the number of sessions showing it
                        cache.RESULTS.put(key, entry)
            finally:
                if flight is not None:
                    cache.FLIGHTS.finish(key, flight, entry)
        out: dict[str, Any] = downloads.write_encoded(folder or session.request_dir(), entry.images)
        out.update(entry.captions)
        state.update(run=entry.run, metrics=entry.metric_sources, result_key=key)
        total = time.perf_counter() - t0
        self.last_timings = state["timings"] = {**steps, "total": total, "cached": float(not steps)}
        wait = ([f"Waited {waited:.1f} s for another request's computation to finish."]
                if waited > SLOW_WAIT_S else [])
        how = (f"computed in {total:.2f} s." if steps else
               f"the same pair and settings were computed before ({entry.seconds:.2f} s); shown from the cache.")
        out["notices"] = "  \n".join(entry.notices + wait + [f"{model or models.DEFAULT_CHOICE} · {how}"])
        out["state"] = state
        return out

    @user_errors
    def fuse(self, visible, infrared, model=None, complementary=True, random_masking=False, dropout="none",
             hole_percent=settings.DEFAULT_HOLE_PERCENT, holes=settings.DEFAULT_HOLES, seed=0, draw_visible=None,
             draw_infrared=None, gate_scale=render.DEFAULT_GATE_SCALE, state=None,
             request: gr.Request = None, progress=gr.Progress()) -> dict[str, Any]:
        """Fuse the pair without and with the interventions. Returns the outputs named in
        FUSE_OUTPUTS: the two fused images (lossless PNG), the difference map, the network
        inputs as fed, per gate level the clean, intervened and change maps with a caption,
        the notices (Markdown) and the session state. A pair already loaded in this session
        (same images and model) reuses its clean pass: only the intervened pass runs."""
        out = self._fuse_named(visible, infrared, model, complementary, random_masking, dropout, hole_percent,
                               holes, seed, draw_visible, draw_infrared, gate_scale, state, progress=progress,
                               owner=self.client_of(request))
        self._remember(request)
        return out

    @user_errors
    def rerender(self, gate_scale, state=None, request: gr.Request = None) -> dict[str, Any]:
        """A display option changed: redraw the gate maps of this session's last run (or of the
        precomputed default result) without running the network. Outputs: RENDER_OUTPUTS.
        A session whose result was dropped is told to press Fuse again."""
        run = self._last_run(state, request) or self.default_run
        if run is None:
            return {n: gr.skip() for n in RENDER_OUTPUTS}
        limit = render.change_limit([run])
        gates, gate_captions = render.gate_figure(render.render_levels(run, gate_scale, limit), limit)
        return {"gates": downloads.save_image(session.request_dir(), "gates", gates, lossless=False),
                "gate_captions": gate_captions}

    @user_errors
    def metrics(self, state, request: gr.Request = None) -> list[list]:
        """The eleven metrics of the last fuse in this session (clean, intervened, change),
        computed once per cached result."""
        run = self._last_run(state, request) or self.default_run
        if run is None:
            raise gr.Error("Fuse a pair first.", title="Nothing to measure")
        key = state.get("result_key") if isinstance(state, dict) else None
        entry = cache.RESULTS.get(key) if key else None
        if entry is not None and entry.run is run:
            if entry.metrics is None:
                entry.metrics = downloads.metrics_table(run)
            return entry.metrics
        return downloads.metrics_table(run)

    @user_errors
    def downloads(self, state, request: gr.Request = None) -> list[str]:
        """Write the last run's download files (fused PNGs, gates.npz) now that they are asked for."""
        run = self._last_run(state, request) or self.default_run
        if run is None:
            raise gr.Error("Fuse a pair first.", title="Nothing to download")
        return downloads.write_downloads(run, session.request_dir())

    @user_errors
    def compare(self, visible, infrared, model=None, other_model=None, complementary=True, random_masking=False,
                dropout="none", hole_percent=settings.DEFAULT_HOLE_PERCENT, holes=settings.DEFAULT_HOLES, seed=0,
                draw_visible=None, draw_infrared=None, gate_scale=render.DEFAULT_GATE_SCALE, state=None,
                progress=gr.Progress()) -> dict[str, Any]:
        """Run one pair and one set of interventions (one seed: the same masks) through two
        models. Outputs (COMPARE_OUTPUTS): the two intervened fused images side by side, per
        level the two models' clean | intervened | change maps one above the other, a Markdown
        summary, and the session state (each model's pair is kept, so a repeat is cheap)."""
        if not other_model or other_model == model:
            raise gr.Error("Choose a second model, other than the first, to compare with.", title="Nothing to compare",
                           print_exception=False)
        s = self._settings(complementary, random_masking, dropout, hole_percent, holes, seed)
        render.gate_scale_name(gate_scale)
        state = state if isinstance(state, dict) else {}
        results = []
        for name in (model, other_model):  # both load (or fail) before any work, outside the slot
            self.bank.get(name)
        _say_if_waiting(progress)
        with COMPUTE.hold("compare"):
            drawn = (uploads.drawn_keep_mask(draw_visible), uploads.drawn_keep_mask(draw_infrared))
            for name in (model, other_model):
                pair = self._pair(visible, infrared, name)
                results.append((name or models.DEFAULT_CHOICE, runs.run_session_pair(pair, s, drawn)))
        folder = session.request_dir()
        fused = viz.side_by_side([r.intervened.fused_rgb for _, r in results], gap=8)
        names = [short_name(n) for n, _ in results]
        # each picture's label names the models where they are (gr.update: the API still gets the file)
        out: dict[str, Any] = {"compare_fused": gr.update(
            value=downloads.save_image(folder, "compare_fused", fused, lossless=True),
            label=f"Fused, intervened: {names[0]} (left) | {names[1]} (right)")}
        limit = render.change_limit([r for _, r in results])  # one change scale for both models
        levels = [render.render_levels(r, gate_scale, limit, name=short_name(n)) for n, r in results]
        lines = [f"Left / top: **{results[0][0]}**. Right / bottom: **{results[1][0]}**. "
                 f"Intervention: {results[0][1].label}, the same masks for both (seed {s.seed}).",
                 render.scale_caption(limit, "the three levels and both models")]
        for i, level in enumerate(GATE_LEVELS):
            a, b = levels[0][i], levels[1][i]
            stack = viz.stacked([a.image, b.image])
            out[f"compare_{level.key}"] = gr.update(
                value=downloads.save_image(folder, f"compare_{level.key}", stack, lossless=False),
                label=f"{level.label}: {names[0]} (top) | {names[1]} (bottom); clean | intervened | change")
            lines.append(f"{level.label}: {results[0][0]}: mean gate clean {float(results[0][1].clean.gates[i].mean()):.3f}; "
                         f"{results[1][0]}: {float(results[1][1].clean.gates[i].mean()):.3f}.")
        out["compare_summary"] = "  \n".join(lines)
        out["state"] = state
        return out

    def compare_choices(self, model, other):
        """The compare menu for a main model: every other model, keeping the current choice
        unless it is now the main one (then the untrained network, or the first other)."""
        others = [c for c in self.bank.choices() if c != (model or self.default_model)]
        if other not in others:
            other = models.UNTRAINED_CHOICE if models.UNTRAINED_CHOICE in others else others[0]
        return gr.update(choices=others, value=other)

    def prefetch(self, visible, infrared, model):
        """A pair was loaded (or the model changed): compute its clean pass now, into the shared
        pair cache. Silent: bad inputs are reported by the pair info and by Fuse."""
        if visible is None or infrared is None:
            return
        try:
            self.bank.get(model)
            with COMPUTE.hold("prefetch"):
                self._pair(visible, infrared, model)
        except Exception:  # noqa: BLE001 - a prefetch must never bother the user
            log.debug("prefetch skipped", exc_info=True)

    def page_status(self):
        """On each page load: the start-up notice and the model to preselect, as the background
        downloads stand now (`ModelBank.current_default`): a page opened once a download has
        landed gets that model. Outputs: the notice, the model menu, the model's description."""
        choice, notes = self.bank.current_default()
        note = gr.update(value="**Note:** " + " ".join(notes) if notes else "", visible=bool(notes))
        return note, choice if choice != self.default_model else gr.skip(), self.model_info(choice)

    def model_info(self, model) -> str:
        """The chosen model in words (no server paths) and its notices."""
        try:
            fuser, notes = self.bank.get(model)
        except WeightsError as e:
            return f"**{model}** cannot be loaded: {e}"
        return f"Runs on the {fuser.path} inference path ({fuser.device}). " + " ".join(notes)

    def choose_model(self, model, state=None, progress=gr.Progress()) -> dict[str, Any]:
        """A model was chosen in the menu: load it now (the authors' model is downloaded on
        first choice, with progress). If it cannot be loaded (offline, a bad file), a toast says
        why and the menu goes back to this session's last usable model. Outputs: MODEL_OUTPUTS."""
        state = state if isinstance(state, dict) else {}

        def shown(done, total):
            progress(done / total if total else None, desc=f"Downloading the authors' model: "
                                                             f"{done / 1e6:.1f} of {total / 1e6:.1f} MB")

        try:
            _, notes = self.bank.get(model, progress=shown)
        except WeightsError as e:
            back = state.get("model") or self.default_model
            gr.Warning(f"{model} cannot be used: {e} Staying on {back}.", title="Model not available")
            return {"model": back, "model_info": f"**{model}** cannot be loaded: {e} Staying on **{back}**.",
                    "state": state}
        state["model"] = model
        return {"model": gr.skip(), "model_info": self.model_info(model), "state": state}

    def hole_text(self, visible, hole_percent) -> str:
        """The hole size in pixels for the loaded visible image (read from its header only)."""
        lo, hi = settings.HOLE_PERCENT_RANGE
        try:
            pct = float(hole_percent)
        except (TypeError, ValueError):
            pct = float("nan")
        if not lo <= pct <= hi:  # what Fuse would refuse is not described as if it would run
            return f"Hole size must be from {lo:g}% to {hi:g}% of the short side."
        try:
            head = uploads.header(visible, "visible image")
            w, h = head.width, head.height
            scale = min(1.0, self.bank.max_side / max(w, h)) if self.bank.max_side else 1.0
            w, h = round(w * scale), round(h * scale)
            side = max(1, round(min(h, w) * pct / 100))
            size = f"this {w}x{h} pair" + (" (as downscaled)" if scale < 1 else "")
            return f"Holes of {pct:g}% of the short side: **{side} px** on {size} (paper: 16 px on 256 px crops)."
        except Exception:  # noqa: BLE001 - no pair yet, or not readable: say it generally
            return "Holes are sized relative to the image's short side (paper: 16 px on 256 px crops, 6.25%)."

    def cancel(self, state) -> None:
        """Ask this session's running stability analysis to stop."""
        if isinstance(state, dict) and isinstance(state.get("cancel"), threading.Event):
            state["cancel"].set()

    @user_errors
    def stability(self, visible, infrared, model=None, complementary=True, random_masking=False, dropout="none",
                  hole_percent=settings.DEFAULT_HOLE_PERCENT, holes=settings.DEFAULT_HOLES, seed=0,
                  draw_visible=None, draw_infrared=None, k=8, gate_scale=render.DEFAULT_GATE_SCALE, state=None,
                  progress=gr.Progress()) -> dict[str, Any]:
        """Run K seeded interventions (`ivfusion.stability.StabilityAnalysis`). Outputs
        (STABILITY_OUTPUTS): the output instability map, the mean gate map, the feature-level
        view (coarse | mid | fine) and a Markdown summary with each r, its p-value and a plain
        reading. Progress is reported per intervention; the session's Cancel stops it between
        interventions and the maps then cover the runs done. The run stops at the time budget
        (`STABILITY_BUDGET_S` per `STABILITY_BUDGET_PER` interventions) the same way, and the
        summary says so. It holds the compute slot one intervention at a time, so other users'
        Fuse waits for at most one intervention."""
        k = _whole_k(k)
        s = self._settings(complementary, random_masking, dropout, hole_percent, holes, seed)
        fuser, _ = self.bank.get(model)
        with COMPUTE.hold("stability decode"):  # the decode's memory never adds to a forward's
            drawn = (uploads.drawn_keep_mask(draw_visible), uploads.drawn_keep_mask(draw_infrared))
            vis, ir, _ = uploads.load_pair(visible, infrared, self.bank.max_side)
        cancel = threading.Event()
        if isinstance(state, dict):
            state["cancel"] = cancel
        progress(0.0, desc=f"0 of {k} interventions")
        budget_s = self.stability_budget_s * max(1.0, k / STABILITY_BUDGET_PER)
        res = analysis.run_stability(
            fuser, vis, ir, s, k, drawn, cancel=cancel, budget_s=budget_s, slot=COMPUTE,
            progress=lambda done, total: progress(done / total, desc=f"{done} of {total} interventions"))
        if res.stopped_by == "time budget":
            gr.Info(f"Stability analysis stopped by its {budget_s:g} s time budget after {res.done} "
                    f"of {res.k} interventions; the maps cover the runs done.")
        elif res.cancelled:
            gr.Info(f"Stability analysis cancelled after {res.done} of {res.k} interventions.")
        if res.done == 0:
            return {"instability": gr.skip(), "mean_gate": gr.skip(), "features": gr.skip(),
                    "summary": f"Cancelled before the first of {res.k} interventions."}
        figs = analysis.stability_figures(res, gate_scale, fuser.eta)
        folder = session.request_dir()
        return {name: downloads.save_image(folder, name, figs[name], lossless=False)
                for name in ("instability", "mean_gate", "features")} | {"summary": figs["summary"]}



def _whole_k(k) -> int:
    """K as a whole number from 4 to 32; anything else (8.9, NaN, None, "8x") is refused, never
    truncated."""
    try:
        v = float(k)
        ok = not isinstance(k, bool) and v == int(v)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise gr.Error(f"K must be a whole number from 4 to 32, got {k!r}.", title="Cannot use this input",
                       print_exception=False)
    if not 4 <= int(v) <= 32:
        raise gr.Error(f"K must be a whole number from 4 to 32, got {int(v)}.", title="Cannot use this input",
                       print_exception=False)
    return int(v)


def _say_if_waiting(progress) -> None:
    """Tell the page that this request waits for another one's computation (the compute slot
    is held), before it waits."""
    if progress is not None and COMPUTE.holder is not None:
        what = "a stability analysis step" if COMPUTE.holder.startswith("stability") else "another request"
        progress(None, desc=f"Waiting for {what} to finish computing\u2026")


def _finished(run: runs.LabRun, scale: str, load_notices) -> tuple[cache.CachedResult, dict[str, float]]:
    """A computed run made into what the page shows, each image encoded once (the cache keeps
    the encoded bytes); and the seconds of rendering and encoding."""
    t0 = time.perf_counter()
    figs = render.render(run, scale)
    gates, gate_captions = render.gate_figure(figs.levels, figs.change_limit)
    t1 = time.perf_counter()
    images = downloads.encode_images({
        "fused_clean": (figs.fused_clean, True), "fused_intervened": (figs.fused_intervened, True),
        "difference": (figs.difference, False), "inputs": (figs.inputs, True),  # lossless: hidden = exactly 0
        "gates": (gates, False)})
    t2 = time.perf_counter()
    captions = {"difference_caption": "**Change in the fused image**, |F_intervened - F_clean|: "
                                      + figs.difference_caption, "gate_captions": gate_captions}
    entry = cache.CachedResult(run, images, captions, list(load_notices) + run.notices, seconds=run.seconds + t2 - t0,
                               metric_sources=downloads.metric_sources(run))
    return entry, {"render": t1 - t0, "encode": t2 - t1}


def _has_layers(editor_value) -> bool:
    """Whether a mask editor's value carries any painted layer (decoding nothing)."""
    if editor_value is None:
        return False
    layers = editor_value.get("layers") if isinstance(editor_value, dict) else [editor_value]
    return bool(layers) and any(layer is not None for layer in layers)


SHORT_NAMES = {models.DEFAULT_CHOICE: "Bundled", models.OFFICIAL_CHOICE: "Authors'",
               models.UNTRAINED_CHOICE: "Untrained"}


def short_name(model: str | None) -> str:
    """A model's name short enough to title a figure row."""
    return SHORT_NAMES.get(model or models.DEFAULT_CHOICE, str(model)[:24])
