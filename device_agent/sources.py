"""Where the agent's images come from when they do not arrive over a serial port.

Each source yields Sample(id, image, label): image uint8 [H, W, C] in the bundle's input shape (or
None with an ``error`` when a file cannot be used: that input still gets an answer, an error line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".webp", ".npy"}


@dataclass
class Sample:
    id: str
    image: np.ndarray | None
    label: int | None = None
    error: str | None = None


def dataset_samples(name: str, split: str = "test", limit: int | None = None, data_dir=None,
                    offset: int = 0, input_shape_chw: tuple[int, int, int] | None = None) -> Iterator[Sample]:
    """The first ``limit`` images of a split, in file order (so runs are comparable). An image
    folder is resized/converted to ``input_shape_chw`` (the bundle's input) when given."""
    from agilenn.datasets import load_dataset, load_for_model

    data = (load_for_model(name, split, input_shape_chw, data_dir) if input_shape_chw is not None
            else load_dataset(name, split, data_dir))
    end = len(data) if limit is None else min(len(data), offset + limit)
    for i in range(offset, end):
        yield Sample(f"{data.name}/{split}/{i}", data.images[i], int(data.labels[i]))


def _load_image(path: Path, shape_hwc: tuple[int, int, int]) -> np.ndarray:
    h, w, c = shape_hwc
    if path.suffix.lower() == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.ndim == 2:
            x = x[..., None]
        if x.dtype != np.uint8:
            raise ValueError(f"{path}: .npy images must be uint8, got {x.dtype}")
    else:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                # Resizing would hide a mismatch between the data and the model; say so instead.
                raise ValueError(f"{path}: image is {im.size[0]}x{im.size[1]}, the model takes {w}x{h}")
            x = np.asarray(im, dtype=np.uint8)
        if x.ndim == 2:
            x = x[..., None]
    if x.shape != (h, w, c):
        raise ValueError(f"{path}: image is {list(x.shape)} (HWC), the model takes {[h, w, c]}")
    return x


def image_samples(paths, shape_hwc: tuple[int, int, int], class_names=None) -> Iterator[Sample]:
    """Files, or folders of files (sorted, recursively). A parent folder named after a class is the label."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    index = {name: i for i, name in enumerate(class_names or [])}
    for f in files:
        label = index.get(f.parent.name)
        try:
            yield Sample(str(f), _load_image(f, shape_hwc), label)
        except (OSError, ValueError) as exc:
            yield Sample(str(f), None, label, error=str(exc))
