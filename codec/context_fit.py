"""Learn the rans-ctx tables (``coder.context``) from training-set symbols.

Runs once, at export (or when a shipped bundle is updated); decoders and the C encoder only read
the result. Steps:

1. Count, per remote channel and context (codec/rans_ctx.py: the neighbours' values), how often
   each symbol follows: counts n[c, ctx, s] over the training images.
2. Smooth every context towards its channel's order-0 distribution p0[c]:
   m[c, ctx] = n[c, ctx] + beta * p0[c]. A context seen rarely (or never) in training so falls back
   to its channel's statistics instead of trusting a handful of counts.
3. Merge the C x B^n contexts into at most ``rows`` shared distributions: hard clustering under
   code length (Lloyd iterations in which each context joins the distribution that codes its
   smoothed counts in the fewest bits, and each distribution is the normalised sum of its members'
   counts: k-means with the KL divergence, Banerjee et al., "Clustering with Bregman divergences",
   JMLR 2005), grown by splitting the costliest cluster (LBG). Deterministic: no random start.
4. Quantize each distribution to integer frequencies (codec.rans.quantize_frequencies, every
   frequency >= 1) and map each context to the integer row that codes it cheapest.

A channel that is constant on the training set (the shipped bundle's channels 15-18 are always 0)
ends up in a row with frequency 2^n - (L-1) for that symbol, i.e. ~0.001 bit per symbol.
"""

from __future__ import annotations

import numpy as np

from .rans import DEFAULT_PRECISION, quantize_frequencies
from .rans_ctx import MAX_ROWS, ContextModel

# Chosen by measurement on the shipped Fashion-MNIST bundle (benchmarks/RESULTS.md, "rans-ctx").
DEFAULT_NEIGHBOURS = ("left", "up", "prev")
DEFAULT_ROWS = 32
DEFAULT_BETA = 2.0  # pseudo-counts of the channel's order-0 distribution added to every context
# Neighbour values are told apart up to this many bins ("outside" included): the row map has
# channels x bins^neighbours bytes, 16 x 9^3 = 11,664 B with 8 levels unmerged. Five keeps 4-level
# bundles exact (values 0-3 + outside) and, with more levels, merges the top ones, which are rare
# under ReLU6 features (Fashion-MNIST version 3, 8 levels: 63.26 B with 9 bins and 14,745 B of
# tables, 63.33 B with 5 bins and 5,081 B; docs/training.md).
DEFAULT_MAX_BINS = 5
LLOYD_ITERATIONS = 30


def context_counts(indices: np.ndarray, model: ContextModel, chunk: int = 2000) -> np.ndarray:
    """n[c * contexts + ctx, s] over indices uint8 [N, channels, height, width] (in chunks: bounded memory)."""
    channels, contexts, levels = model.shape[0], model.contexts, model.levels
    counts = np.zeros(channels * contexts * levels, dtype=np.int64)
    channel = np.arange(channels).reshape(1, -1, 1, 1) * contexts
    for i in range(0, indices.shape[0], chunk):
        s = np.asarray(indices[i:i + chunk], dtype=np.int64)
        key = (model.contexts_of(s) + channel) * levels + s
        counts += np.bincount(key.reshape(-1), minlength=counts.size)
    return counts.reshape(channels * contexts, levels)


def _cluster(mass: np.ndarray, rows: int) -> np.ndarray:
    """At most ``rows`` distributions [r, L] that code the rows of ``mass`` [K, L] in few bits."""
    def assign(dists):
        return (-(mass @ np.log2(dists).T)).argmin(axis=1)

    def refit(a, r):
        sums = np.zeros((r, mass.shape[1]))
        np.add.at(sums, a, mass)
        sums = sums[sums.sum(axis=1) > 0]
        return sums / sums.sum(axis=1, keepdims=True)

    dists = (mass.sum(axis=0) / mass.sum())[None]
    levels = mass.shape[1]
    while dists.shape[0] < rows:
        ce = -(mass @ np.log2(dists).T)
        a = ce.argmin(axis=1)
        cost = np.bincount(a, weights=ce[np.arange(len(a)), a], minlength=dists.shape[0])
        grow = np.argsort(-cost, kind="stable")[: rows - dists.shape[0]]
        nudged = dists[grow] * (1 + 1e-3 * (np.arange(levels) - (levels - 1) / 2))
        before = dists.shape[0]
        dists = np.concatenate([dists, nudged / nudged.sum(axis=1, keepdims=True)])
        for _ in range(LLOYD_ITERATIONS):
            dists = np.clip(refit(assign(dists), dists.shape[0]), 1e-12, None)
        if dists.shape[0] <= before:  # no split survived: the data has no more distinct clusters
            break
    return dists


def fit_context(indices: np.ndarray, levels: int, neighbours=DEFAULT_NEIGHBOURS, rows: int = DEFAULT_ROWS,
                precision: int = DEFAULT_PRECISION, beta: float = DEFAULT_BETA,
                max_bins: int = DEFAULT_MAX_BINS) -> dict:
    """The manifest's ``coder.context`` learned from training symbols uint8 [N, channels, height, width].

    A neighbour's value v counts as bin min(v, max_bins - 2), "outside" as bin max_bins - 1: values
    at and above max_bins - 2 share one bin (never merged when levels + 1 <= max_bins)."""
    indices = np.asarray(indices)
    if indices.ndim != 4 or indices.shape[0] < 1:
        raise ValueError(f"indices must be [N, channels, height, width], got shape {list(indices.shape)}")
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be in 1..{MAX_ROWS}, got {rows}")
    if max_bins < 2:
        raise ValueError(f"max_bins must be >= 2 (one value bin and outside), got {max_bins}")
    _, channels, height, width = indices.shape
    top = min(levels, max_bins - 1)  # the outside bin's number; value bins are 0 .. top - 1
    bins = [min(v, top - 1) for v in range(levels)] + [top]
    contexts = (top + 1) ** len(neighbours)
    # The rule alone (one placeholder row) checks the arguments and forms the contexts for counting.
    rule = {"neighbours": list(neighbours), "bins": bins, "row_map": [[0] * contexts] * channels,
            "frequency_bits": precision, "frequencies": [[(1 << precision) - (levels - 1)] + [1] * (levels - 1)]}
    model = ContextModel(rule, channels, height, width, levels)

    counts = context_counts(indices, model).astype(np.float64)
    per_channel = counts.reshape(channels, contexts, levels).sum(axis=1) + 1.0
    p0 = per_channel / per_channel.sum(axis=1, keepdims=True)
    mass = counts + beta * np.repeat(p0, contexts, axis=0)

    dists = _cluster(mass, rows)
    freq = quantize_frequencies(dists, precision)
    row_of = (-(mass @ np.log2(freq / float(1 << precision)).T)).argmin(axis=1)
    used, row_of = np.unique(row_of, return_inverse=True)  # drop rows no context uses
    context = {"neighbours": list(neighbours), "bins": bins,
               "row_map": row_of.reshape(channels, contexts).tolist(),
               "frequency_bits": int(precision), "frequencies": freq[used].tolist(),
               "fitted_on": {"images": int(indices.shape[0]), "beta": float(beta), "max_rows": int(rows)}}
    ContextModel(context, channels, height, width, levels)  # the result must pass the reader's checks
    return context
