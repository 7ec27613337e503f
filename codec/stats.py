"""Reference numbers a coder is judged against."""

from __future__ import annotations

import numpy as np


def order0_entropy_bits(symbols: np.ndarray, levels: int) -> float:
    """Total bits of the symbols under their own empirical per-channel order-0 distribution.

    symbols: uint8 [samples, channels, positions]. This is the floor for any static per-channel
    model, the one the ans coder uses.
    """
    samples, channels, positions = symbols.shape
    total = 0.0
    for ch in range(channels):
        counts = np.bincount(symbols[:, ch].reshape(-1), minlength=levels).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        total += -(counts[counts > 0] * np.log2(p)).sum()
    return total


def cross_entropy_bits(symbols: np.ndarray, probabilities: np.ndarray) -> float:
    """Total bits of the symbols under a given per-channel model (the manifest's tables)."""
    samples, channels, positions = symbols.shape
    p = np.asarray(probabilities, dtype=np.float64)[:channels]
    total = 0.0
    for ch in range(channels):
        counts = np.bincount(symbols[:, ch].reshape(-1), minlength=p.shape[1]).astype(np.float64)
        with np.errstate(divide="ignore"):
            total += -(counts[counts > 0] * np.log2(p[ch][counts > 0])).sum()
    return total
