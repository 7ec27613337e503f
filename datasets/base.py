"""What every loader returns (:class:`Dataset`) and how a missing file is reported."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message names the file (and the apt package if any)."""


@dataclass
class Dataset:
    name: str
    split: str
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape_chw(self) -> tuple[int, int, int]:
        _, h, w, c = self.images.shape
        return (c, h, w)

    def subset(self, n: int | None, seed: int = 0) -> "Dataset":
        """A reproducible random subset of ``n`` items (all of them if n is None or too big)."""
        if n is None or n >= len(self):
            return self
        return self.rows(np.sort(np.random.default_rng(seed).permutation(len(self))[:n]))

    def rows(self, idx) -> "Dataset":
        """The items at the row indices ``idx``, in that order."""
        idx = np.asarray(idx)
        return Dataset(self.name, self.split, self.images[idx], self.labels[idx], list(self.classes))


def need(path: Path, hint: str = "") -> Path:
    """``path`` if it exists, else DatasetNotFoundError naming it (and ``hint``)."""
    if not path.exists():
        msg = f"dataset file not found: {path}"
        raise DatasetNotFoundError(msg + (f" ({hint})" if hint else ""))
    return path
