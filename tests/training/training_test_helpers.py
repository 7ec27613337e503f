"""Fixture writers shared by the training tests (a uniquely named module: `from conftest import ...`
resolves to whichever conftest.py was imported first when several test folders run together)."""
from __future__ import annotations

import numpy as np


def synthetic_images(n: int, h: int, w: int, c: int, classes: int, seed: int = 0):
    """Learnable toy images: class i is a bright bar at a class-specific position plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    imgs = rng.integers(0, 60, (n, h, w, c)).astype(np.uint8)
    for j, y in enumerate(labels):
        r = (y * h) // classes
        imgs[j, r:r + max(1, h // classes), :, :] = 230
    return imgs, labels.astype(np.int64)


def write_fashion_mnist(root, n_train=300, n_test=100):
    from agilenn.datasets import write_idx

    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = synthetic_images(n, 28, 28, 1, 10, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x[..., 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    return root


# A small trained bundle in seconds: the flags the remote-NN tests train with.
TINY_RUN = ["--preselect-samples", "50", "--batch-size", "64", "--threads", "2", "--channels", "10",
            "--body-width", "16"]


def train_tiny(root, n_test: int = 60, *extra: str):
    """Train a tiny run on a synthetic Fashion-MNIST under ``root``; returns (data dir, run dir, the args)."""
    from agilenn.training.cli import main

    data = write_fashion_mnist(root / "data", n_train=300, n_test=n_test)
    out = root / "run"
    args = ["--data-dir", str(data), "--out", str(out), "--epochs", "1", *TINY_RUN, *extra]
    assert main(args) == 0
    return data, out, args
