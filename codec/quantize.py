"""Nearest-centroid scalar quantization of remote feature channels.

Training learns the centroids (a soft-to-hard quantizer); on the wire only the index of the nearest
centroid travels, and the server maps it back to the centroid value.
"""

from __future__ import annotations

import numpy as np

MAX_LEVELS = 256  # indices travel as uint8


def validate_centroids(centroids) -> np.ndarray:
    """Return centroids as a float32 vector, or raise ValueError naming the problem."""
    c = np.asarray(centroids, dtype=np.float64)
    if c.ndim != 1 or not 2 <= c.size <= MAX_LEVELS:
        raise ValueError(f"centroids must be a vector of 2..{MAX_LEVELS} values, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("centroids must be finite")
    if not np.all(np.diff(c) > 0):
        raise ValueError("centroids must be strictly ascending")
    return c.astype(np.float32)


def quantize(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for every value (ties go to the lower centroid), as uint8."""
    c = np.asarray(centroids, dtype=np.float32)
    # With ascending centroids the nearest one is found by bisecting the midpoints between neighbours.
    midpoints = (c[:-1] + c[1:]) / 2
    x = np.asarray(features, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinity")
    return np.searchsorted(midpoints, x, side="left").astype(np.uint8)


def dequantize(indices: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Centroid value for every index, as float32."""
    c = np.asarray(centroids, dtype=np.float32)
    idx = np.asarray(indices)
    if idx.size and int(idx.max()) >= c.size:
        raise ValueError(f"index {int(idx.max())} out of range for {c.size} centroids")
    return c[idx]
