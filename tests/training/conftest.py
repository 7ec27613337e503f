"""Tiny on-disk dataset fixtures in every format agilenn.datasets reads (nothing downloads)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from training_test_helpers import synthetic_images, write_fashion_mnist


@pytest.fixture
def fmnist_dir(tmp_path):
    return write_fashion_mnist(tmp_path / "fmnist")


def _cifar_rows(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # NHWC -> N x (R,G,B planes)


@pytest.fixture
def cifar10_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x, y = synthetic_images(4, 32, 32, 3, 10, i)
        with open(root / name, "wb") as fh:
            pickle.dump({"data": _cifar_rows(x), "labels": y.tolist()}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return tmp_path


@pytest.fixture
def cifar100_dir(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for i, name in enumerate(("train", "test")):
        x, y = synthetic_images(6, 32, 32, 3, 100, i)
        with open(root / name, "wb") as fh:
            pickle.dump({"data": _cifar_rows(x), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}, fh)
    with open(root / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, fh)
    return tmp_path


@pytest.fixture
def svhn_dir(tmp_path):
    from scipy.io import savemat

    for i, split in enumerate(("train", "test")):
        x, y = synthetic_images(5, 32, 32, 3, 10, i)
        y_mat = np.where(y == 0, 10, y).reshape(-1, 1)  # SVHN stores 0 as 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y_mat})
    return tmp_path


@pytest.fixture
def tinyimagenet_dir(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
                                    "n01641577\tbullfrog, Rana catesbeiana\nn99999999\tunused\n")
    for i, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for j in range(2):
            Image.fromarray(np.full((64, 64, 3), 40 * i + j, np.uint8)).save(d / f"{w}_{j}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for j in range(3):
        Image.fromarray(np.full((64, 64, 3), 80 * j, np.uint8)).save(root / "val" / "images" / f"val_{j}.JPEG")
        lines.append(f"val_{j}.JPEG\t{wnids[(j + 1) % 3]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.fixture
def make_images():
    return synthetic_images
