"""Channel preselection (the paper's Algorithm 1): before joint training, reorder the extractor's
output channels so the ones the evaluator already finds important come first. Joint training then
only has to sharpen an existing skew instead of creating it from scratch.
"""
from __future__ import annotations

import torch

from .xai import channel_importance, importance

METHODS = ("none", "global_importance", "topk_appearance")


def measure_channel_importance(evaluator, extractor, x, y, method="ig", ig_steps=0, zero_grad=None,
                               batch_size=500) -> torch.Tensor:
    """Per-sample, per-channel importance [N, C] of the extractor's features on (x, y)."""
    out = []
    extractor.eval()
    for i in range(0, x.shape[0], batch_size):
        with torch.no_grad():
            f = extractor(x[i:i + batch_size])
        I, _ = importance(evaluator, f, y[i:i + batch_size], method, ig_steps, zero_grad)
        out.append(channel_importance(I).detach())
    return torch.cat(out)


def channel_order(ci: torch.Tensor, k: int, method: str) -> torch.Tensor:
    """Permutation of channel indices, most likely important first.

    - ``global_importance``: by mean importance over the samples.
    - ``topk_appearance``: by how often a channel is among a sample's top-k (ties by mean importance).
    """
    C = ci.shape[1]
    if method == "none":
        return torch.arange(C)
    mean = ci.mean(0)
    if method == "global_importance":
        return torch.argsort(mean, descending=True)
    if method == "topk_appearance":
        top = torch.topk(ci, k, dim=1).indices
        counts = torch.bincount(top.reshape(-1), minlength=C).double()
        # counts dominate; mean importance (scaled into [0, 1)) breaks ties
        score = counts + mean.double() / (mean.double().max() + 1e-12) * 0.5
        return torch.argsort(score, descending=True)
    raise ValueError(f"unknown preselection {method!r}; choose one of {', '.join(METHODS)}")
