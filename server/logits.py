"""Logits on the wire: float32 (v1), float16, or int16 / int8 with a scale (proto Logits, LogitsEncoding).

Which one a lean stream uses is the client's choice; benchmarks/logits_precision.py measures on the
whole test set how many predictions each changes (benchmarks/RESULTS.md). numpy does the rounding:
float16 is IEEE 754 binary16 (round to nearest even), int8 rounds half away from zero after scaling.
"""

from __future__ import annotations

import numpy as np

from agilenn.v1 import inference_pb2 as pb

FORMATS = ("float32", "float16", "int16", "int8")
ENCODINGS = {"float32": pb.LOGITS_FLOAT32, "float16": pb.LOGITS_FLOAT16, "int16": pb.LOGITS_INT16,
             "int8": pb.LOGITS_INT8}
_INT_MAX = {pb.LOGITS_INT16: 32767, pb.LOGITS_INT8: 127}


class LogitsError(ValueError):
    """A Logits message that does not hold a valid vector."""


def encode_logits(values, encoding) -> pb.Logits:
    """float32 logits [classes] -> Logits in ``encoding`` (a name of FORMATS or a LogitsEncoding)."""
    if isinstance(encoding, str):
        encoding = ENCODINGS[encoding]
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    if encoding == pb.LOGITS_FLOAT16:
        return pb.Logits(float16=x.astype("<f2").tobytes())
    if encoding in _INT_MAX:
        top = _INT_MAX[encoding]
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        scale = np.float32(peak / top if peak > 0 and np.isfinite(peak) else 1.0)
        q = np.clip(np.sign(x) * np.floor(np.abs(x) / scale + 0.5), -top, top)
        if encoding == pb.LOGITS_INT8:
            return pb.Logits(int8=q.astype(np.int8).tobytes(), scale=float(scale))
        return pb.Logits(int16=q.astype("<i2").tobytes(), scale=float(scale))
    return pb.Logits(values=x.tolist())


def decode_logits(logits: pb.Logits) -> np.ndarray:
    """Logits in any encoding -> float32 [classes]."""
    if logits.float16:
        if len(logits.float16) % 2:
            raise LogitsError(f"float16 logits of {len(logits.float16)} bytes (not a whole number of values)")
        return np.frombuffer(logits.float16, dtype="<f2").astype(np.float32)
    if logits.int16:
        if len(logits.int16) % 2:
            raise LogitsError(f"int16 logits of {len(logits.int16)} bytes (not a whole number of values)")
        if not logits.scale > 0:
            raise LogitsError(f"int16 logits with scale {logits.scale} (must be > 0)")
        return np.frombuffer(logits.int16, dtype="<i2").astype(np.float32) * np.float32(logits.scale)
    if logits.int8:
        if not logits.scale > 0:
            raise LogitsError(f"int8 logits with scale {logits.scale} (must be > 0)")
        return np.frombuffer(logits.int8, dtype=np.int8).astype(np.float32) * np.float32(logits.scale)
    return np.asarray(logits.values, dtype=np.float32)
