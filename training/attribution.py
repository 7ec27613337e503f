"""Faithful measurement of feature importance: how much of the evaluator's decision the k local
channels really carry, with a check that the attribution is trustworthy.

Training uses cheap attributions (2-point IG, or saliency) because it differentiates through them
every step. A report must not: Integrated Gradients (Sundararajan et al., ICML 2017) is faithful
only when its path integral is computed accurately, and IG's *completeness* axiom says how
accurately:

    sum_i attr_i  =  L(f) - L(f0)            (here L = the evaluator's cross-entropy, f0 = 0)

    attr = (f - f0) * integral_0^1 dL/dz(f0 + t (f - f0)) dt
         ~ (f - f0) * trapezoid over m equal intervals of t

The gap |sum attr - (L(f) - L(f0))| shrinks as m grows; :func:`faithful_ig` doubles m until the
mean gap is at most ``tolerance`` x the mean |L(f) - L(f0)| (5 % by default) and reports the m and
the gap it reached. Skewness is then the share of sum_{h,w} |attr| held by the first k channels,
the same definition training uses.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .xai import channel_importance, importance, skewness

COMPLETENESS_TOLERANCE = 0.05  # mean |gap| <= 5 % of mean |L(f) - L(0)|
STEP_SCHEDULE = (16, 32, 64, 128, 256)  # m values tried in order


def _loss_and_grad(evaluator: nn.Module, z: torch.Tensor, labels: torch.Tensor):
    z = z.detach().requires_grad_(True)
    loss = F.cross_entropy(evaluator(z), labels, reduction="none")
    (g,) = torch.autograd.grad(loss.sum(), z)  # sum: each sample's gradient is its own dL/dz
    return loss.detach(), g


def integrated_gradients(evaluator: nn.Module, f: torch.Tensor, labels: torch.Tensor, steps: int):
    """Signed IG attributions [N, C, H, W] of the CE loss w.r.t. features f against a zero baseline,
    trapezoid rule over ``steps`` intervals, and the completeness target L(f) - L(0) per sample [N]."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    total = torch.zeros_like(f)
    loss_0 = loss_f = None
    for i in range(steps + 1):
        loss, g = _loss_and_grad(evaluator, f * (i / steps), labels)
        total += g * (0.5 if i in (0, steps) else 1.0)
        if i == 0:
            loss_0 = loss
        if i == steps:
            loss_f = loss
    return f * total / steps, loss_f - loss_0


def completeness_gap(attr: torch.Tensor, delta: torch.Tensor) -> tuple[float, float]:
    """(mean |sum attr - delta|, mean |delta|) over the batch."""
    gap = (attr.sum(dim=(1, 2, 3)) - delta).abs()
    return float(gap.mean()), float(delta.abs().mean())


@dataclass
class FaithfulSkewness:
    skewness_mean: float  # share of |IG| in the first k channels, mean over samples
    skewness_median: float
    ig_steps: int  # m that met the completeness tolerance (or the largest tried)
    completeness_gap_mean: float  # mean |sum attr - (L(f) - L(0))|
    completeness_target_mean: float  # mean |L(f) - L(0)|
    completeness_relative: float  # gap / target
    met_tolerance: bool
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def faithful_ig(evaluator: nn.Module, f: torch.Tensor, labels: torch.Tensor, tolerance: float = COMPLETENESS_TOLERANCE,
                schedule=STEP_SCHEDULE, batch_size: int = 250):
    """|IG| attributions at the smallest m of ``schedule`` whose completeness gap is within
    ``tolerance``; returns (|attr| [N,C,H,W], FaithfulSkewness without the skewness filled in)."""
    evaluator.eval()
    for steps in schedule:
        attrs, gaps, targets = [], 0.0, 0.0
        for i in range(0, f.shape[0], batch_size):
            a, d = integrated_gradients(evaluator, f[i:i + batch_size], labels[i:i + batch_size], steps)
            g, t = completeness_gap(a, d)
            n = a.shape[0]
            gaps, targets = gaps + g * n, targets + t * n
            attrs.append(a.abs())
        n = max(1, f.shape[0])
        gap, target = gaps / n, targets / n
        relative = gap / max(target, 1e-12)
        if relative <= tolerance or steps == schedule[-1]:
            return torch.cat(attrs), (steps, gap, target, relative, relative <= tolerance)
    raise AssertionError("unreachable: the schedule's last entry always returns")


def measure_skewness(evaluator: nn.Module, f: torch.Tensor, labels: torch.Tensor, k: int,
                     tolerance: float = COMPLETENESS_TOLERANCE) -> tuple[FaithfulSkewness, torch.Tensor]:
    """Faithful skewness of features f [N, C, H, W] (channel order as the evaluator reads them);
    also returns the per-sample skewness [N]."""
    attr, (steps, gap, target, relative, met) = faithful_ig(evaluator, f, labels, tolerance)
    s = skewness(channel_importance(attr), k)
    return FaithfulSkewness(float(s.mean()), float(s.median()), steps, gap, target, relative, met, int(f.shape[0])), s


def method_skewness(evaluator: nn.Module, f: torch.Tensor, labels: torch.Tensor, k: int, method: str,
                    ig_steps: int = 0, batch_size: int = 250) -> float:
    """Mean skewness under a training-time attribution (2-point IG, m-step IG, saliency), to set
    beside the faithful one: what the losses optimised vs what is true."""
    out = []
    for i in range(0, f.shape[0], batch_size):
        I, _ = importance(evaluator, f[i:i + batch_size], labels[i:i + batch_size], method, ig_steps)
        out.append(skewness(channel_importance(I.detach()), k))
    return float(torch.cat(out).mean())


def nonzero_fraction(f: torch.Tensor, k: int) -> dict:
    """How often local and remote feature values are non-zero: zero features get zero IG
    attribution against a zero baseline, so a sparse remote side inflates skewness by itself."""
    nz = (f != 0).float()
    return {"local": float(nz[:, :k].mean()), "remote": float(nz[:, k:].mean())}


AUDIT_SAMPLES = 2000  # test images the audit uses (a fixed random subset: IG at m steps costs m+1 passes)


def audit(evaluator: nn.Module, extractors: dict, x: torch.Tensor, y: torch.Tensor, k: int, train_method: str,
          train_ig_steps: int, batch_size: int = 500) -> dict:
    """The XAI audit of a bundle: for each named extractor (e.g. "initial", "trained"), faithful
    skewness with its completeness check, the skewness the training-time attribution reports,
    saliency's, and how often local / remote features are non-zero."""
    out = {"samples": int(x.shape[0]), "tolerance": COMPLETENESS_TOLERANCE}
    for name, extractor in extractors.items():
        extractor.eval()
        with torch.no_grad():
            f = torch.cat([extractor(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        faithful, per_sample = measure_skewness(evaluator, f, y, k)
        out[name] = {
            "faithful": faithful.as_dict(),
            "training_method": {"method": train_method, "ig_steps": train_ig_steps,
                                "skewness_mean": method_skewness(evaluator, f, y, k, train_method, train_ig_steps)},
            "saliency_skewness_mean": method_skewness(evaluator, f, y, k, "saliency"),
            "nonzero_fraction": nonzero_fraction(f, k),
        }
        out[name]["faithful"]["frac_ge_0.8"] = float((per_sample >= 0.8).float().mean())
    return out


def audit_bundle(bundle_dir, samples: int = AUDIT_SAMPLES, seed: int = 0, data_dir=None) -> dict:
    """Re-measure a bundle's skewness from what it stores (evaluator.onnx, extractor.onnx, the
    manifest's preprocessing, k and the training attribution), on its data set's test split."""
    from agilenn.datasets import load_for_model
    from agilenn.models import load_bundle

    from .onnx_torch import OnnxModule

    bundle = load_bundle(bundle_dir)
    xai = bundle.manifest.get("xai")
    if not xai or "evaluator" not in bundle.files or "extractor" not in bundle.files:
        raise ValueError(f"{bundle.path}: no 'xai' section with evaluator and extractor models "
                         "(bundles written before the XAI audit cannot be re-measured; retrain or re-export)")
    data = load_for_model(bundle.manifest["dataset"], "test", bundle.input_shape, data_dir).subset(samples, seed)
    x = torch.from_numpy(bundle.preprocess(data.images))
    y = torch.from_numpy(data.labels)
    evaluator = OnnxModule(bundle.files["evaluator"])
    extractor = OnnxModule(bundle.files["extractor"])
    return audit(evaluator, {"trained": extractor}, x, y, bundle.k, xai.get("method", "ig"), xai.get("ig_steps", 0))


def main(argv: list[str] | None = None) -> int:
    """``python -m agilenn.training.attribution --bundle DIR``: print the audit of a bundle as JSON."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m agilenn.training.attribution", description=main.__doc__)
    p.add_argument("--bundle", required=True)
    p.add_argument("--samples", type=int, default=AUDIT_SAMPLES)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    print(json.dumps(audit_bundle(args.bundle, args.samples, data_dir=args.data_dir), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
