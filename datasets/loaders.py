"""Dataset readers for the standard on-disk formats the trainer, the agent and the benchmarks read.

numpy-only on purpose: the device agent (which has no torch) imports this module to replay test
splits. Every loader returns images as uint8 NHWC (grayscale data has C=1), labels as int64.
Nothing is ever downloaded: a missing file is an error that names it. A user's own photos load
through ``imagefolder:PATH`` (datasets/imagefolder.py).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from .base import SPLITS, Dataset, DatasetNotFoundError, need as _need  # noqa: F401  (re-exported)
from .imagefolder import IMAGEFOLDER_PREFIX, load_imagefolder

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
    """A CIFAR pickle as a dict with str keys.

    The official files are Python-2 pickles (latin1 str keys); a copy re-pickled under Python 3 from
    ``pickle.load(..., encoding="bytes")`` has bytes keys (b"data"). Both are accepted.
    """
    with open(_need(path), "rb") as fh:
        try:
            obj = pickle.load(fh, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ValueError(f"{path}: not a CIFAR python pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR pickle holds a dict, this one holds {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise ValueError(f"{path}: CIFAR pickle has no {key!r} entry (it has {sorted(map(str, batch))})")
    return batch[key]


def _names(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(batch: dict, path: Path) -> np.ndarray:
    # rows are 3072 bytes: 1024 R, 1024 G, 1024 B, each 32x32 row-major -> NHWC
    data = np.asarray(_field(batch, "data", path), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: CIFAR 'data' must be [N, 3072] bytes, got {list(data.shape)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _load_cifar10(split: str, data_dir: Path) -> Dataset:
    if (data_dir / "cifar-10-batches-py").is_dir():
        data_dir = data_dir / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    paths = [data_dir / n for n in names]
    batches = [_unpickle(p) for p in paths]
    meta_path = data_dir / "batches.meta"
    classes = (_names(_field(_unpickle(meta_path), "label_names", meta_path)) if meta_path.exists()
               else list(CIFAR10_CLASSES))
    images = np.concatenate([_cifar_images(b, p) for b, p in zip(batches, paths)])
    labels = np.concatenate([np.asarray(_field(b, "labels", p), dtype=np.int64) for b, p in zip(batches, paths)])
    return Dataset("cifar10", split, np.ascontiguousarray(images), labels, classes)


def _load_cifar100(split: str, data_dir: Path) -> Dataset:
    if (data_dir / "cifar-100-python").is_dir():
        data_dir = data_dir / "cifar-100-python"
    path, meta_path = data_dir / split, data_dir / "meta"
    batch = _unpickle(path)
    classes = _names(_field(_unpickle(meta_path), "fine_label_names", meta_path))
    return Dataset("cifar100", split, np.ascontiguousarray(_cifar_images(batch, path)),
                   np.asarray(_field(batch, "fine_labels", path), dtype=np.int64), classes)


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


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None,
                 image_size: tuple[int, int] | None = None, channels: int | None = None) -> Dataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` (see :data:`DATASETS`), or of a user's
    own image tree with ``imagefolder:PATH`` (``PATH/{train,test}/<class>/*.jpg|png``).

    Images come back as uint8 NHWC (C=1 for Fashion-MNIST), labels as int64. ``image_size``
    (height, width) and ``channels`` (1 or 3) apply to image folders only, whose files may differ in
    size and mode (see datasets/imagefolder.py for the defaults).
    """
    if name.startswith(IMAGEFOLDER_PREFIX):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
        root = name[len(IMAGEFOLDER_PREFIX):] or (str(data_dir) if data_dir is not None else "")
        if not root:
            raise ValueError("imagefolder needs a path: --dataset imagefolder:PATH")
        return load_imagefolder(root, split, image_size=image_size, channels=channels)
    if image_size is not None or channels is not None:
        raise ValueError(f"image_size/channels apply to imagefolder datasets only, not {name!r}")
    name = name.lower().replace("_", "-")
    if name == "fmnist":
        name = "fashion-mnist"
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or imagefolder:PATH")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return _LOADERS[name](split, Path(data_dir) if data_dir is not None else default_data_dir(name))


def load_for_model(name: str, split: str, input_shape_chw: tuple[int, int, int],
                   data_dir: str | os.PathLike | None = None) -> Dataset:
    """``split`` of ``name`` as a model with input [C, H, W] takes it: image folders are resized and
    converted to that shape (as the trainer saw them); the named data sets load as they are."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        c, h, w = input_shape_chw
        return load_dataset(name, split, data_dir, image_size=(h, w), channels=c)
    return load_dataset(name, split, data_dir)


def check_dataset_name(name: str) -> str:
    """argparse ``type=``: a known data set name or ``imagefolder:PATH``."""
    if name.startswith(IMAGEFOLDER_PREFIX):
        if not name[len(IMAGEFOLDER_PREFIX):]:
            raise ValueError("imagefolder needs a path: imagefolder:PATH")
        return name
    canonical = "fashion-mnist" if name.lower() == "fmnist" else name.lower().replace("_", "-")
    if canonical not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or imagefolder:PATH")
    return canonical
