"""A user's own images in the ImageFolder layout (the one torchvision and Keras read):

    PATH/train/<class name>/<any name>.jpg|.jpeg|.png
    PATH/test/<class name>/...

Labels are the class folders' indices in sorted order (torchvision's convention), taken from the
train split when it exists so that both splits agree. Files of any size and mode load:

- size: ``image_size`` (height, width) if given, else the size of the first image (sorted order)
  of the train split; other images are resized to it (bilinear, Pillow). A model is trained at one
  input size, so the agent passes the bundle's size to get the same images the trainer saw.
- channels: ``channels`` (1 or 3) if given, else 1 when that first image is grayscale, otherwise 3.

Pillow decodes; files are read with a thread pool (Pillow releases the GIL while decoding, so a
50,000-image tree loads in seconds rather than a minute).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetNotFoundError

IMAGEFOLDER_PREFIX = "imagefolder:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError  # Pillow is a runtime dependency (the server decodes images)

    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable JPEG/PNG image ({exc})") from None
    return img


def _decode(path: Path, size_hw: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    img = _open(path).convert("L" if channels == 1 else "RGB")
    if img.size != (size_hw[1], size_hw[0]):
        img = img.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def load_imagefolder(root, split: str, image_size: tuple[int, int] | None = None,
                     channels: int | None = None) -> Dataset:
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"image folder split not found: {split_dir} (expected {root}/{split}/<class>/*.jpg)")
    label_dir = root / "train" if (root / "train").is_dir() else split_dir
    classes = _class_dirs(label_dir)
    if len(classes) < 2:
        raise ValueError(f"{label_dir}: an image folder needs at least two class folders, found {classes}")
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown} are not in {label_dir} ({classes})")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")

    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = split_dir / name
        if folder.is_dir():
            files = _image_files(folder)
            paths += files
            labels += [index] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"{split_dir}: no {'/'.join(IMAGE_SUFFIXES)} files in its class folders")

    if image_size is None or channels is None:
        first = next((f for name in classes if (label_dir / name).is_dir() for f in _image_files(label_dir / name)),
                     paths[0])
        probe = _open(first)
        if image_size is None:
            image_size = (probe.size[1], probe.size[0])
        if channels is None:
            channels = 1 if probe.mode in _GRAYSCALE_MODES else 3
    h, w = (int(image_size[0]), int(image_size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive (height, width), got {image_size!r}")

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: _decode(p, (h, w), channels), paths))
    return Dataset(f"{IMAGEFOLDER_PREFIX}{root}", split, np.stack(images), np.asarray(labels, dtype=np.int64), classes)
