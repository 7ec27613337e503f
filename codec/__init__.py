"""agilenn.codec: quantize remote feature channels and code them into a self-describing payload.

No torch, no gRPC: the device agent and the server share this module.
"""

from .coders import CODER_NAMES, bits_per_symbol
from .errors import PayloadError
from .payload import HEADER_SIZE, MAGIC, VERSION, DecodedFeatures, FeatureCodec, PayloadHeader, parse_header
from .quantize import dequantize, quantize, validate_centroids
from .stats import cross_entropy_bits, order0_entropy_bits

__all__ = [
    "CODER_NAMES",
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "DecodedFeatures",
    "FeatureCodec",
    "PayloadError",
    "PayloadHeader",
    "bits_per_symbol",
    "cross_entropy_bits",
    "dequantize",
    "order0_entropy_bits",
    "parse_header",
    "quantize",
    "validate_centroids",
]
