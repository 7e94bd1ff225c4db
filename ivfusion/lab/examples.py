"""The bundled example pairs (assets/examples/vi and assets/examples/ir; sources and
licences in assets/examples/README.md)."""
from __future__ import annotations

from pathlib import Path

from .. import io
from ..hub import REPO_ROOT

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"

# file stem -> label shown in the app
EXAMPLES: dict[str, str] = {
    "msrs_00001D": "Day: pedestrians at a building (MSRS)",
    "msrs_00002D": "Day: parked cars (MSRS)",
    "msrs_00009N": "Night: pedestrian and cyclist in the dark (MSRS)",
    "msrs_00010N": "Night: car with headlights (MSRS)",
    "msrs_00037N": "Night: glare hides pedestrians (MSRS)",
    "msrs_00039N": "Night: people the camera misses (MSRS)",
    "roadscene_FLIR_04688": "Day: pedestrian and dog crossing (RoadScene)",
    "roadscene_FLIR_05857": "Night: street with cars (RoadScene)",
}


def example_pairs(folder: Path = EXAMPLES_DIR) -> list[tuple[str, str, str]]:
    """(visible path, infrared path, label) for each bundled example, in EXAMPLES order."""
    vis, ir = io.list_images(folder / "vi"), io.list_images(folder / "ir")
    return [(str(vis[k]), str(ir[k]), label) for k, label in EXAMPLES.items() if k in vis and k in ir]
