"""ivfusion: ISFuse infrared/visible image fusion, its interventions, metrics and tools.

    import ivfusion
    fuser = ivfusion.Fuser()                      # bundled trained weights, CPU or CUDA
    result = fuser.fuse(visible_rgb, infrared)    # numpy in, numpy out
    result.fused_rgb, result.gates
"""
from .config import ISFuseConfig
from .hub import WeightsError, load_model
from .interventions import KINDS as INTERVENTIONS
from .interventions import MaskConfig
from .io import ImageError, read_image
from .modeling import ISFuse
from .predictor import Fuser, FusionResult

__version__ = "0.1.0"

__all__ = [
    "INTERVENTIONS", "Fuser", "FusionResult", "ISFuse", "ISFuseConfig", "ImageError",
    "MaskConfig", "WeightsError", "load_model", "read_image",
]
