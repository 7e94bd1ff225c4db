"""ISFuse as small modules, one per concept (segment-anything's `modeling/` layout)."""
from .blocks import ConvBNAct, double_conv, upsample_to
from .cfi import CFI, InvarianceGate, PooledCrossAttention
from .decoder import Decoder
from .encoder import Encoder
from .isfuse import ISFuse, check_inputs

__all__ = [
    "CFI", "ConvBNAct", "Decoder", "Encoder", "ISFuse", "InvarianceGate",
    "PooledCrossAttention", "check_inputs", "double_conv", "upsample_to",
]
