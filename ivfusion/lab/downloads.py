"""The eleven metrics before/after, the download files, and the image files the page shows."""
from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from .. import io, viz
from ..levels import GATE_LEVELS, npz_key
from .runs import LabRun

METRIC_HEADERS = ["metric", "clean", "intervened", "change"]
METRICS_NOTE = ("Both outputs are measured against the unmasked sources; change = intervened - clean. Read the "
                "change with care: **EN, SD, SF and AG rise under masking** because they measure the fused image "
                "alone (entropy, contrast, edges), and a black hole adds sharp edges and contrast, so a higher "
                "value there does not mean better fusion. SCD, VIF, Qabf, SSIM, PSNR and CC compare the output "
                "with the sources and fall when the holes lose what the sources showed (MI can move either way). "
                "Conventions of "
                "the field: SSIM is summed over both sources (up to 2); PSNR uses the field's ~60 dB convention "
                "(MSE of images scaled to [0, 1], peak 255).")
HEAT_JPEG_QUALITY = 90  # heat maps: pixels do not matter, size and encoding time do
BUTTON_ROOM = 32  # white rows above a heat map for the page's buttons (a multiple of JPEG's 8-pixel blocks)


def metric_sources(run: LabRun) -> dict[str, np.ndarray]:
    """The four uint8 images the metrics need (small enough to keep per session):
    infrared (H, W), visible RGB, fused clean RGB, fused intervened RGB."""
    return {"infrared": viz.to_uint8(run.clean.inputs["infrared"]), "visible": run.clean.visible_rgb,
            "clean": run.clean.fused_rgb, "intervened": run.intervened.fused_rgb,
            "same": np.array(run.intervened is run.clean)}


def metrics_table(run: LabRun | dict) -> list[list]:
    """Rows [metric, clean, intervened, change] of the eleven metrics
    (`ivfusion.metrics.evaluate_pair`), both outputs measured against the unmasked sources.
    run: a LabRun or its `metric_sources`."""
    from ..metrics import METRIC_NAMES, evaluate_pair

    src = metric_sources(run) if isinstance(run, LabRun) else run
    clean = evaluate_pair(src["infrared"], src["visible"], src["clean"])
    same = bool(src.get("same", False)) or np.array_equal(src["clean"], src["intervened"])
    inter = clean if same else evaluate_pair(src["infrared"], src["visible"], src["intervened"])
    rows = []
    for name in METRIC_NAMES:
        a, b = clean[name], inter[name]
        change = b - a if math.isfinite(a) and math.isfinite(b) else float("nan")
        rows.append([name, _round(a), _round(b), _round(change)])
    return rows


def _round(v: float, digits: int = 4) -> float:
    if not math.isfinite(v) or v == 0:
        return float(v)
    return float(f"{v:.{digits}g}")


def write_downloads(run: LabRun, folder: Path) -> list[str]:
    """fused_clean.png and fused_intervened.png (lossless RGB) and gates.npz (both passes'
    gate maps at native resolution, keyed `<pass>_gate_<level>` as `ivfusion.levels.npz_key`
    names them, the keep masks, the difference map, the settings)."""
    folder = Path(folder)
    clean_png, inter_png, npz = folder / "fused_clean.png", folder / "fused_intervened.png", folder / "gates.npz"
    io.write_png(clean_png, run.clean.fused_rgb)
    io.write_png(inter_png, run.intervened.fused_rgb)
    arrays = {}
    for name, res in (("clean", run.clean), ("intervened", run.intervened)):
        for level in GATE_LEVELS:
            arrays[f"{name}_{npz_key(level)}"] = res.gates[level.index].astype(np.float32)
    arrays["mask_visible"] = run.intervened.masks[0].astype(np.float32)
    arrays["mask_infrared"] = run.intervened.masks[1].astype(np.float32)
    arrays["difference"] = run.difference.astype(np.float32)
    arrays["info"] = np.array(json.dumps({
        "intervention": run.label, "settings": dataclasses.asdict(run.settings), "model": run.model,
        "eta": run.eta, "levels": [level.key for level in GATE_LEVELS],
        "note": "gate maps in [0, 1], coarsest first; masks: 1 kept, 0 hidden; difference = |F_intervened - F_clean|",
    }))
    np.savez_compressed(npz, **arrays)
    return [str(clean_png), str(inter_png), str(npz)]


_ENCODERS = ThreadPoolExecutor(2, thread_name_prefix="ivfusion-encode")


def encode_images(images: dict[str, tuple[np.ndarray, bool]]) -> dict[str, tuple[bytes, str]]:
    """`encode_image` for each {name: (img, lossless)}, two at a time (OpenCV's encoders release
    the GIL: a 640x480 request's five files took 33 ms instead of 55 ms, tools/lab_overheads.py).
    Returns {name: (bytes, suffix)}."""
    encoded = _ENCODERS.map(lambda item: encode_image(*item[1]), images.items())
    return dict(zip(images, encoded))


def write_encoded(folder: Path, encoded: dict[str, tuple[bytes, str]]) -> dict[str, str]:
    """Write encoded images {name: (bytes, suffix)} into `folder`; returns {name: path}."""
    paths = {}
    for name, (data, suffix) in encoded.items():
        path = Path(folder) / f"{name}{suffix}"
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def save_images(folder: Path, images: dict[str, tuple[np.ndarray, bool]]) -> dict[str, str]:
    """`save_image` for each {name: (img, lossless)}, encoded two at a time. Returns {name: path}."""
    return write_encoded(folder, encode_images(images))


def encode_image(img: np.ndarray, lossless: bool) -> tuple[bytes, str]:
    """An image the page shows, encoded: lossless PNG (fast compression) for fused images and
    network inputs, JPEG for heat maps (with room on top for the page's buttons). Returns
    (bytes, suffix). Gradio serves the file as it is, so no image is encoded twice."""
    img = np.ascontiguousarray(img if lossless else viz.pad_top(img, BUTTON_ROOM))
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    if lossless:
        suffix, (ok, buf) = ".png", cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        suffix, (ok, buf) = ".jpg", cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, HEAT_JPEG_QUALITY])
    if not ok:
        raise OSError("could not encode an image")
    return buf.tobytes(), suffix


def save_image(folder: Path, name: str, img: np.ndarray, lossless: bool) -> str:
    """Write one image the page shows (`encode_image`) as `name` in `folder`; returns the path."""
    return write_encoded(folder, {name: encode_image(img, lossless)})[name]
