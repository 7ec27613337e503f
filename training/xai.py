"""Feature importance from the frozen evaluator, and the AgileNN skewness / disorder losses.

Importance I[n,c,h,w] = |IG| of the evaluator's CE loss w.r.t. the features f against a zero
baseline. The official implementation uses the 2-point trapezoid
    IG ~= 0.5 * (g(0) + g(f)) * (f - 0),   g(z) = dCE(evaluator(z), y)/dz
``ig_steps=m`` gives the m-step Riemann (right-point) form  f * mean_{i=1..m} g(i/m * f)  and
``method="saliency"`` the cheaper |g(f)|. With ``create_graph=True`` the result stays
differentiable w.r.t. f, so the losses below can train the extractor (double backprop).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ZeroBaselineGrad:
    """g(0) depends only on the label (the zero input gives the same logits for every sample, and
    the evaluator is frozen in eval mode), so it is computed once per class and cached."""

    def __init__(self, evaluator: nn.Module, feature_shape: tuple[int, int, int], num_classes: int):
        z = torch.zeros((num_classes, *feature_shape), requires_grad=True,
                        device=next(evaluator.parameters(), torch.empty(0)).device)
        loss = F.cross_entropy(evaluator(z), torch.arange(num_classes, device=z.device), reduction="sum")
        (self.table,) = torch.autograd.grad(loss, z)  # [num_classes, C, H, W]

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table[labels]


def _grad(evaluator, z, labels, create_graph):
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)
    logits = evaluator(z)
    # reduction="sum" so each sample's gradient is its own dCE/dz (not divided by the batch size)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    # retain_graph: the caller may still backprop through the evaluator logits (its CE term)
    (g,) = torch.autograd.grad(loss, z, create_graph=create_graph, retain_graph=True)
    return g, logits


def importance(evaluator: nn.Module, f: torch.Tensor, labels: torch.Tensor, method: str = "ig",
               ig_steps: int = 0, zero_grad: ZeroBaselineGrad | None = None,
               create_graph: bool = False):
    """Return (I, evaluator_logits_on_f). I has f's shape and is >= 0."""
    if method == "saliency":
        g, logits = _grad(evaluator, f, labels, create_graph)
        return g.abs(), logits
    if method != "ig":
        raise ValueError(f"unknown xai method {method!r}")
    if ig_steps and ig_steps > 1:
        acc, logits = 0.0, None
        for i in range(1, ig_steps + 1):
            g, lg = _grad(evaluator, f * (i / ig_steps), labels, create_graph)
            acc = acc + g
            logits = lg if i == ig_steps else logits
        return (f * acc / ig_steps).abs(), logits
    g_f, logits = _grad(evaluator, f, labels, create_graph)
    if zero_grad is not None:
        g_0 = zero_grad(labels)
    else:
        g_0, _ = _grad(evaluator, torch.zeros_like(f), labels, False)
    return (0.5 * (g_0 + g_f) * f).abs(), logits


def channel_importance(I: torch.Tensor) -> torch.Tensor:
    """Per-channel importance: sum over H and W -> [N, C]."""
    return I.sum(dim=(2, 3))


def skewness(ci: torch.Tensor, k: int, eps: float = 1e-12) -> torch.Tensor:
    """Share of the total importance held by the first k (local) channels, per sample."""
    return ci[:, :k].sum(1) / (ci.sum(1) + eps)


def skewness_loss(ci: torch.Tensor, k: int, rho: float) -> torch.Tensor:
    """L_skew = mean(max(0, rho - s))."""
    return F.relu(rho - skewness(ci, k)).mean()


def disorder_loss(ci: torch.Tensor, k: int, eps: float = 1e-12) -> torch.Tensor:
    """L_disorder = mean(max(0, (max I over remote - min I over local) / total)): zero once every
    local channel outweighs every remote one."""
    total = ci.sum(1) + eps
    return F.relu((ci[:, k:].max(1).values - ci[:, :k].min(1).values) / total).mean()
