"""The in-browser Fuse: the Lab's default model runs in the visitor's page with onnxruntime-web.

The server's part is small: it exports the default model's ONNX graph once per weights
(`ivfusion.export`, checked before it is written; cached under the Lab's cache folder), serves
that file, the page's script (`web/lab.js`) and onnxruntime-web's files (the pinned npm
package: installed in `web/node_modules`, or else fetched and checked into the cache folder by
`ortweb`; never a CDN), and answers a
Fuse in browser mode with the keep masks of the settings and seed, drawn by the same sampler
as the server's Fuse (`settings.intervention_masks`), as two small PNGs. No forward pass runs
on the server for it. The page does the rest: decoding, colour conversion, the two forward
passes, the colour maps (the server's look-up tables, sent once) and the live mode.

A pair is computed on the server instead (the page says why) when the browser cannot give the
server's result: a pair larger than the page's budget (the Lab's downscale limit: resizing is
the server's), an infrared image of another size, 16-bit or TIFF files, another model than the
default, or a graph or onnxruntime-web's files not ready yet.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import viz
from ..io import ImageError
from . import models, ortweb, settings, uploads

log = logging.getLogger("ivfusion.lab.browser")

WEB_DIR = Path(__file__).parent / "web"
SCRIPT = WEB_DIR / "lab.js"
BROWSER_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # what every browser decodes to the bytes the server reads


def file_url(path: Path) -> str:
    """Gradio's URL of a file under a static path (`gr.set_static_paths`)."""
    return "/gradio_api/file=" + str(path)


def weights_digest(model) -> str:
    """A digest of a model's weights, config and the export's interface: the graph's cache key."""
    from .. import export

    h = hashlib.sha256(json.dumps([model.config.to_dict(), export.INPUT_NAMES, export.OUTPUT_NAMES,
                                   export.OPSET], sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class BrowserModel:
    """The default model's ONNX graph for the page, exported (and checked) in the background at
    start-up unless the cache has it, once onnxruntime-web's files are here (`ortweb`: fetched
    in the background when not installed). `url` is None until both are ready, or for good
    when they cannot be had here (the `export` extra missing, the files neither installed nor
    fetched: `reason` says)."""

    def __init__(self, bank: models.ModelBank, cache: Path | None = None, ort: ortweb.OrtFiles | None = None):
        self.bank = bank
        cache = Path(cache or models.cache_dir(bank.env))
        self.folder = cache / "onnx"
        self.ort = ort or ortweb.OrtFiles(cache)
        self.path: Path | None = None
        self._reason = "the in-browser model is being prepared"
        self.ready = threading.Event()

    def start(self) -> "BrowserModel":
        import gradio as gr

        self.folder.mkdir(parents=True, exist_ok=True)
        self.ort.root.mkdir(parents=True, exist_ok=True)
        gr.set_static_paths([SCRIPT, self.ort.local, self.ort.root, self.folder])
        try:
            fuser, _ = self.bank.get(models.DEFAULT_CHOICE)  # loaded already by the app's start-up
            model = fuser.model
            path = self.folder / f"isfuse-{weights_digest(model)[:20]}.onnx"
        except Exception as e:  # noqa: BLE001 - the page then computes on the server, and says so
            return self._off(e)
        self.ort.start(lambda ok: self._prepare(model, path) if ok else self.ready.set())
        return self

    def _prepare(self, model, path: Path) -> None:
        if path.is_file():  # exported and checked before: ready now
            self._done(path)
        else:
            threading.Thread(target=self._export, args=(model, path), name="ivfusion-lab-onnx", daemon=True).start()

    def _export(self, model, path: Path) -> None:
        from .. import export

        log.info("exporting the default model for the in-browser Fuse to %s", path)
        try:
            export.export_onnx(model, path)
        except Exception as e:  # noqa: BLE001 - the page then computes on the server, and says so
            self._off(e)
        else:
            self._done(path)

    def _done(self, path: Path) -> None:
        self.path, self._reason = path, ""
        self.ready.set()

    def _off(self, e: BaseException) -> "BrowserModel":
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        self._reason = f"the in-browser model could not be prepared ({first})"
        log.warning("in-browser Fuse off: %s", self.reason)
        self.ready.set()
        return self

    @property
    def reason(self) -> str:
        return self.ort.reason or self._reason

    @property
    def url(self) -> str | None:
        return file_url(self.path) if self.path and self.ort.path else None

    def page_config(self) -> dict[str, Any]:
        """What the page needs once: where onnxruntime-web and the graph are, the budget, the
        colour maps (the server's look-up tables) and the scales' constants."""
        ort = file_url(self.ort.path) + "/" if self.ort.path else None
        return {"ort": ort, "ortVersion": self.ort.pin.version, "model": self.url, "why": self.reason,
                "maxSide": self.bank.max_side,
                "luts": {k: viz.colormap_lut(name).tolist() for k, name in
                         (("gate", viz.GATE_CMAP), ("change", viz.CHANGE_CMAP), ("diverging", viz.DIVERGING_CMAP))},
                "changeFloor": viz.CHANGE_FLOOR}

    def masks(self, visible, infrared, model=None, complementary=True, random_masking=False, dropout="none",
              hole_percent=settings.DEFAULT_HOLE_PERCENT, holes=settings.DEFAULT_HOLES, seed=0, draw_visible=None,
              draw_infrared=None) -> dict[str, Any]:
        """A Fuse in browser mode: the keep masks of these settings for this pair, as the server's
        Fuse would draw them, or {"compute": "server", "why": ...} when the page cannot give the
        server's result. Reads headers and the drawn masks only; no forward pass."""
        try:
            s = settings.Settings(complementary, random_masking, dropout, hole_percent, holes, seed)
            if self.url is None:
                return _server(self.reason)
            if model not in (None, "", models.DEFAULT_CHOICE):
                return _server("only the default model runs in your browser")
            heads = [uploads.header(src, name) for src, name in ((visible, "visible image"), (infrared, "infrared image"))]
            why = _not_for_browser(heads, self.bank.max_side)
            if why:
                return _server(why)
            h, w = heads[0].height, heads[0].width
            drawn = (uploads.drawn_keep_mask(draw_visible), uploads.drawn_keep_mask(draw_infrared))
            m_vi, m_ir = settings.intervention_masks(s, h, w, drawn)
        except (ImageError, ValueError) as e:
            return _server(str(e))
        return {"compute": "browser", "model": self.url, "height": h, "width": w, "label": s.label(any(
                d is not None for d in drawn)), "holePx": s.hole_px(h, w),
                "masks": [_png_url(m_vi), _png_url(m_ir)]}


def _server(why: str) -> dict[str, Any]:
    return {"compute": "server", "why": why}


def _not_for_browser(heads, max_side: int | None) -> str | None:
    """Why the page cannot compute this pair as the server does, or None."""
    vis, ir = heads
    if (vis.width, vis.height) != (ir.width, ir.height):
        return "the two images differ in size (the server resizes the infrared image)"
    if max_side and max(vis.width, vis.height) > max_side:
        return f"the pair is larger than the page's budget of {max_side} px (the server downscales it)"
    for hd, name in ((vis, "visible"), (ir, "infrared")):
        if hd.format.upper() not in BROWSER_FORMATS or hd.bit_depth != 8:
            return f"the {name} image is {hd.bit_depth}-bit {hd.format}, which the page does not decode as the server does"
    return None


def _png_url(mask: np.ndarray) -> str:
    """A keep mask in [0, 1] as a grey PNG data URL (0..255; a few KB for holes)."""
    ok, buf = cv2.imencode(".png", np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8))
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def head() -> str:
    """The page's script tag (for `launch(head=...)`)."""
    # the browser's Fuse button stays hidden until the script has loaded the model
    return ('<style>body:not(.ivf-browser) #fuse-web-btn {display: none !important}</style>'
            f'<script src="{file_url(SCRIPT)}" defer></script>')



def wire(app, demo, web_button, common: list, visible, infrared, gate_scale) -> BrowserModel:
    """The page's hooks, called inside the app's Blocks: the page config at load (the script
    then loads the model once), and the browser-mode Fuse button: the keep masks from the
    server (queued in a group of its own, so they never wait behind a forward pass), then the
    forward passes in the page. `common`: the Fuse's inputs up to the drawn masks, in
    `BrowserModel.masks`' order."""
    import gradio as gr

    model = BrowserModel(app.bank).start()
    cfg = gr.JSON(visible="hidden", elem_id="ivf-web-config")
    masks = gr.JSON(visible="hidden", elem_id="ivf-web-masks")
    demo.load(model.page_config, None, [cfg], queue=False, api_visibility="private", show_progress="hidden").then(
        None, [cfg], None, js=_call("init", "c"))
    web_button.click(model.masks, common, [masks], preprocess=False, concurrency_id="masks", concurrency_limit=4,
                     api_visibility="private", show_progress="hidden").then(
        None, [masks, visible, infrared, gate_scale], None, js=_call("fuse", "m, v, i, s"))
    return model


def _call(method: str, args: str) -> str:
    """A js hook calling window.ivfusionLab.METHOD(args) once the script has loaded (it is
    deferred, and Gradio may fire the load event first)."""
    return (f"({args}) => new Promise((done) => {{ const go = () => window.ivfusionLab ? "
            f"done(window.ivfusionLab.{method}({args})) : setTimeout(go, 50); go(); }})")
