"""The bundled example pairs (package data `ivfusion.assets`, examples/vi and examples/ir;
sources and licences in examples/README.md), their thumbnails, and the pair the page opens with."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .. import io
from ..hub import EXAMPLES_DIR

# file stem -> label shown in the app
EXAMPLES: dict[str, str] = {
    "msrs_00037N": "Night: glare hides pedestrians (MSRS)",
    "msrs_00009N": "Night: pedestrian and cyclist in the dark (MSRS)",
    "msrs_00039N": "Night: people the camera misses (MSRS)",
    "msrs_00010N": "Night: car with headlights (MSRS)",
    "roadscene_FLIR_05857": "Night: street with cars (RoadScene)",
    "msrs_00001D": "Day: pedestrians at a building (MSRS)",
    "msrs_00002D": "Day: parked cars (MSRS)",
    "roadscene_FLIR_04688": "Day: pedestrian and dog crossing (RoadScene)",
}
# the pair the page opens with, its result computed at start-up: at night the infrared image
# shows what the visible one cannot, so the gates and the interventions have a story to tell
DEFAULT_EXAMPLE = "msrs_00037N"


def example_pairs(folder: Path = EXAMPLES_DIR) -> list[tuple[str, str, str]]:
    """(visible path, infrared path, label) for each bundled example, in EXAMPLES order."""
    vis, ir = io.list_images(folder / "vi"), io.list_images(folder / "ir")
    return [(str(vis[k]), str(ir[k]), label) for k, label in EXAMPLES.items() if k in vis and k in ir]


def thumbnail(visible_path: str, infrared_path: str, folder: Path, height: int = 96) -> str:
    """A JPEG thumbnail of a pair, visible left and infrared right; returns its path."""
    parts = []
    for p in (visible_path, infrared_path):
        img = io.read_image(p)
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
        w = round(img.shape[1] * height / img.shape[0])
        parts.append(cv2.resize(img[..., :3], (w, height), interpolation=cv2.INTER_AREA))
    strip = np.concatenate([parts[0], np.full((height, 3, 3), 255, np.uint8), parts[1]], axis=1)
    out = Path(folder) / (Path(visible_path).stem + "_thumb.jpg")
    cv2.imwrite(str(out), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return str(out)
