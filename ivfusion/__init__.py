"""ivfusion: ISFuse infrared/visible image fusion, its interventions, metrics and tools.

    import ivfusion
    fuser = ivfusion.Fuser()                      # bundled trained weights, CPU or CUDA
    result = fuser.fuse(visible_rgb, infrared)    # numpy in, numpy out
    result.fused_rgb, result.gates

Names are imported on first use, so that `ivfusion.metrics` (numpy/OpenCV only) does not pay
for importing torch.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ISFuseConfig": "ivfusion.config",
    "WeightsError": "ivfusion.hub",
    "load_model": "ivfusion.hub",
    "INTERVENTIONS": "ivfusion.interventions",
    "MaskConfig": "ivfusion.interventions",
    "ImageError": "ivfusion.io",
    "read_image": "ivfusion.io",
    "read_header": "ivfusion.io",
    "ISFuse": "ivfusion.modeling",
    "Fuser": "ivfusion.predictor",
    "FusionResult": "ivfusion.predictor",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ivfusion' has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + ["__version__"])
