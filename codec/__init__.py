"""agilenn.codec: quantize remote feature channels and code them into a payload (a short header, then the body).

No torch, no gRPC: the device agent and the server share this module.
"""

from .coders import CODER_NAMES, bits_per_symbol
from .errors import PayloadError
from .payload import (
    HEADER_SIZE_V1,
    MAGIC,
    VERSION,
    VERSION_COMPACT,
    VERSION_SELF_DESCRIBING,
    DecodedFeatures,
    FeatureCodec,
    PayloadHeader,
    header_size,
    model_check,
    parse_header,
)
from .quantize import dequantize, quantize, validate_centroids
from .stats import cross_entropy_bits, order0_entropy_bits

__all__ = [
    "CODER_NAMES",
    "HEADER_SIZE_V1",
    "MAGIC",
    "VERSION",
    "VERSION_COMPACT",
    "VERSION_SELF_DESCRIBING",
    "DecodedFeatures",
    "FeatureCodec",
    "PayloadError",
    "PayloadHeader",
    "bits_per_symbol",
    "cross_entropy_bits",
    "header_size",
    "model_check",
    "dequantize",
    "order0_entropy_bits",
    "parse_header",
    "quantize",
    "validate_centroids",
]
