"""Torch-side data plumbing: normalisation stats, in-memory tensors, batch augmentation."""
from __future__ import annotations

import numpy as np
import torch

from agilenn.datasets import Dataset

SCALE = 1.0 / 255.0


def channel_stats(ds: Dataset) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the [0,1]-scaled training images (the manifest's input.mean/std)."""
    x = ds.images.reshape(-1, ds.images.shape[-1]).astype(np.float64) * SCALE
    return [float(v) for v in x.mean(0)], [float(v) for v in x.std(0)]


def to_tensor(ds: Dataset, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC -> normalised float32 NCHW, exactly the agent's preprocessing."""
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() * SCALE
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(), torch.from_numpy(ds.labels)


def augment(x: torch.Tensor, pad: int | None = None, flip: bool = True, gen: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift crop (edge-replicate padding) + horizontal flip, per sample.

    pad None: 2 px below 32 px (what the Fashion-MNIST bundles were trained with), 4 px from 32 px
    up (the standard CIFAR shift; 2 px under-regularises a net that sees 32x32 colour images)."""
    n, c, h, w = x.shape
    if pad is None:
        pad = 4 if min(h, w) >= 32 else 2
    # The random numbers come from ``gen`` on the CPU whatever x's device, so a batch on the GPU is
    # augmented exactly as the same batch on the CPU; only the gather runs where x lives.
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(dev)  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(dev)  # [n, w]
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        f = (torch.rand(n, generator=gen) < 0.5).to(dev)
        out = torch.where(f[:, None, None, None], out.flip(3), out)
    return out.contiguous()


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator | None = None,
                 area: tuple[float, float] = (0.02, 0.33), log_ratio: tuple[float, float] = (-1.2, 1.2)) -> torch.Tensor:
    """Random erasing (Zhong et al., AAAI 2020): with probability p per sample, one rectangle of
    2-33 % of the image, aspect ratio e^U(-1.2, 1.2) ~ 0.3-3.3, is set to 0 - the data set's mean
    after normalisation, so the net sees "no evidence" rather than a colour.

    Written here rather than taken from torchvision: its RandomErasing works per image, and the
    batch must draw from ``gen`` so every rank and every resumed run augments the same way."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    u = torch.rand(n, 5, generator=gen)
    a = (area[0] + (area[1] - area[0]) * u[:, 0]) * h * w
    r = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[:, 1])
    eh = torch.sqrt(a * r).round().clamp(1, h).long()
    ew = torch.sqrt(a / r).round().clamp(1, w).long()
    y0 = (u[:, 2] * (h - eh + 1).float()).long()
    x0 = (u[:, 3] * (w - ew + 1).float()).long()
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # [n, h]
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # [n, w]
    erase = (in_rows[:, :, None] & in_cols[:, None, :]) & (u[:, 4] < p)[:, None, None]  # [n, h, w]
    return x.masked_fill(erase[:, None].to(x.device), 0.0)


def merge_holdout_split(n: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, kept) sorted row indices of an n-image training split: a fixed random ``holdout`` of
    them (by ``seed``; never a prefix, as image folders load class by class) and the rest."""
    if not 0 <= holdout < n:
        raise ValueError(f"merge hold-out: {holdout} images asked for, the training split has {n}")
    order = np.random.default_rng([seed, 0x4D45]).permutation(n)  # its own stream: not run.sample's subset
    return np.sort(order[:holdout]), np.sort(order[holdout:])


def split_merge_holdout(train, holdout: int, seed: int):
    """(the rest, the merge hold-out or None): a training Dataset split by merge_holdout_split."""
    if not holdout:
        return train, None
    held, kept = merge_holdout_split(len(train), holdout, seed)
    return train.rows(kept), train.rows(held)


def merge_holdout_note(held, seed: int) -> str:
    """The words the merge calibration's split label gets for a hold-out (report.md, manifest)."""
    return f" ({len(held)} images held out of every stage, seed {seed})"


def merge_holdout_rows(train, config: dict):
    """(what the run trained on, its merge hold-out or None) of ``train``, the full training split, for a
    run with this training ``config`` (a bundle's training.config): trainer.Run's split, redone."""
    if not config.get("merge_holdout", 0):
        return train, None
    seed = config.get("seed", 0)
    return split_merge_holdout(train.subset(config.get("train_subset"), seed), config["merge_holdout"], seed)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, gen: torch.Generator | None = None):
    """Mini-batches of (x, y), shuffled by ``gen`` (on the CPU; x and y may live on another device)."""
    n = x.shape[0]
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx.to(x.device)], y[idx.to(y.device)]


def batches_match_cpu(device: str | torch.device, n: int = 300, batch_size: int = 128) -> bool:
    """Whether an epoch of batches cut, shifted, flipped and erased on ``device`` holds the same numbers
    as on the CPU from the same generator seed (trainer.Run keeps the training split on the GPU when
    it fits; a rented GPU's driver checks this before it trains)."""
    x, y = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(n)

    def epoch(xs, ys):
        gen = torch.Generator().manual_seed(3)
        return [(random_erase(augment(xb, gen=gen), 0.5, gen).cpu(), yb.cpu())
                for xb, yb in batches(xs, ys, batch_size, True, gen)]

    pairs = zip(epoch(x, y), epoch(x.to(device), y.to(device)), strict=True)
    return all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in pairs)
