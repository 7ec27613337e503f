"""Dataset readers for the on-disk formats the trainer and the device agent understand.

numpy-only on purpose: the device agent (which has no torch) imports this module to replay test
splits. Every loader returns images as uint8 NHWC (grayscale data has C=1), labels as int64.
Nothing is ever downloaded: a missing file is an error that names it.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_APT = "apt-get install dataset-fashion-mnist"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
SVHN_CLASSES = [str(i) for i in range(10)]

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "svhn", "tinyimagenet")
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
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return Dataset(self.name, self.split, self.images[idx], self.labels[idx], list(self.classes))


def _need(path: Path, hint: str = "") -> Path:
    if not path.exists():
        msg = f"dataset file not found: {path}"
        raise DatasetNotFoundError(msg + (f" ({hint})" if hint else ""))
    return path


# ---------------------------------------------------------------- Fashion-MNIST (idx, gzip'd)

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0x0000 <dtype> <ndim>, big-endian dims, data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims).copy()  # writable, detached from the file buffer


def write_idx(path: Path, array: np.ndarray) -> None:
    """Inverse of :func:`read_idx` (used by tests to build fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


def _load_fashion_mnist(split: str, data_dir: Path) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        gz, plain = data_dir / f"{prefix}-{kind}.gz", data_dir / f"{prefix}-{kind}"
        files.append(plain if plain.exists() and not gz.exists() else
                     _need(gz, f"install the Debian package: {FASHION_MNIST_APT}"))
    images, labels = read_idx(files[0]), read_idx(files[1])
    return Dataset("fashion-mnist", split, images[..., None], labels.astype(np.int64),
                   list(FASHION_MNIST_CLASSES))


# ---------------------------------------------------------------- CIFAR-10/100 (python pickles)

def _unpickle(path: Path) -> dict:
    with open(_need(path), "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def _cifar_images(batch: dict) -> np.ndarray:
    # rows are 3072 bytes: 1024 R, 1024 G, 1024 B, each 32x32 row-major -> NHWC
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _load_cifar10(split: str, data_dir: Path) -> Dataset:
    if (data_dir / "cifar-10-batches-py").is_dir():
        data_dir = data_dir / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batches = [_unpickle(data_dir / n) for n in names]
    meta_path = data_dir / "batches.meta"
    classes = list(_unpickle(meta_path)["label_names"]) if meta_path.exists() else list(CIFAR10_CLASSES)
    images = np.concatenate([_cifar_images(b) for b in batches])
    labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    return Dataset("cifar10", split, np.ascontiguousarray(images), labels, classes)


def _load_cifar100(split: str, data_dir: Path) -> Dataset:
    if (data_dir / "cifar-100-python").is_dir():
        data_dir = data_dir / "cifar-100-python"
    batch = _unpickle(data_dir / split)
    classes = list(_unpickle(data_dir / "meta")["fine_label_names"])
    return Dataset("cifar100", split, np.ascontiguousarray(_cifar_images(batch)),
                   np.asarray(batch["fine_labels"], dtype=np.int64), classes)


# ---------------------------------------------------------------- SVHN (cropped digits, .mat)

def _load_svhn(split: str, data_dir: Path) -> Dataset:
    from scipy.io import loadmat  # scipy is only needed for this format

    mat = loadmat(_need(data_dir / f"{split}_32x32.mat"))
    images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))  # HWCN -> NHWC
    labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
    return Dataset("svhn", split, images, labels, list(SVHN_CLASSES))


# ---------------------------------------------------------------- Tiny ImageNet (folder layout)

def _load_tinyimagenet(split: str, data_dir: Path) -> Dataset:
    from PIL import Image  # Pillow decodes the JPEGs

    if (data_dir / "tiny-imagenet-200").is_dir():
        data_dir = data_dir / "tiny-imagenet-200"
    wnids = [w.strip() for w in _need(data_dir / "wnids.txt").read_text().split() if w.strip()]
    words = {}
    words_path = data_dir / "words.txt"
    if words_path.exists():
        for line in words_path.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.strip()
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in wnids:
            folder = _need(data_dir / "train" / wnid / "images")
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() in (".jpeg", ".jpg", ".png"):
                    paths.append(p)
                    labels.append(index[wnid])
    else:  # the labelled validation set serves as the test split (the real test set has no labels)
        for line in _need(data_dir / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                paths.append(_need(data_dir / "val" / "images" / parts[0]))
                labels.append(index[parts[1]])
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths]) \
        if paths else np.zeros((0, 64, 64, 3), np.uint8)
    classes = [words.get(w, w).split(",")[0] for w in wnids]
    return Dataset("tinyimagenet", split, images, np.asarray(labels, dtype=np.int64), classes)


_LOADERS = {
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "svhn": _load_svhn,
    "tinyimagenet": _load_tinyimagenet,
}


def default_data_dir(name: str) -> Path:
    if name == "fashion-mnist":
        return Path(os.environ.get("AGILENN_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    return Path(os.environ.get("AGILENN_DATA_DIR", "data")) / name


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` (see :data:`DATASETS`).

    Images come back as uint8 NHWC (C=1 for Fashion-MNIST), labels as int64.
    """
    name = name.lower().replace("_", "-")
    if name == "fmnist":
        name = "fashion-mnist"
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return _LOADERS[name](split, Path(data_dir) if data_dir is not None else default_data_dir(name))
