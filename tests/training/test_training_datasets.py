"""Dataset readers on tiny fixtures in each on-disk format. numpy-only: no torch needed."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agilenn.training.datasets import DatasetNotFoundError, load_dataset


def _check(ds, n, hwc, classes):
    assert ds.images.dtype == np.uint8 and ds.images.shape == (n, *hwc)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert len(ds.classes) == classes
    assert ds.labels.min() >= 0 and ds.labels.max() < classes


def test_fashion_mnist_idx_gz(fmnist_dir, make_images):
    train = load_dataset("fashion-mnist", "train", fmnist_dir)
    test = load_dataset("fashion-mnist", "test", fmnist_dir)
    _check(train, 300, (28, 28, 1), 10)
    _check(test, 100, (28, 28, 1), 10)
    x, y = make_images(300, 28, 28, 1, 10, 0)
    np.testing.assert_array_equal(train.images, x)
    np.testing.assert_array_equal(train.labels, y)
    assert train.classes[0] == "T-shirt/top"


def test_fashion_mnist_missing_names_apt_package(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", tmp_path)


def test_cifar10_pickles(cifar10_dir, make_images):
    train = load_dataset("cifar10", "train", cifar10_dir)
    _check(train, 20, (32, 32, 3), 10)
    x0, _ = make_images(4, 32, 32, 3, 10, 0)
    np.testing.assert_array_equal(train.images[:4], x0)  # channel planes -> NHWC round trip
    _check(load_dataset("cifar10", "test", cifar10_dir), 4, (32, 32, 3), 10)


def test_cifar100_pickles(cifar100_dir):
    ds = load_dataset("cifar100", "test", cifar100_dir)
    _check(ds, 6, (32, 32, 3), 100)
    assert ds.classes[3] == "f3"


def test_svhn_mat_maps_label_10_to_0(svhn_dir, make_images):
    ds = load_dataset("svhn", "train", svhn_dir)
    _check(ds, 5, (32, 32, 3), 10)
    x, y = make_images(5, 32, 32, 3, 10, 0)
    np.testing.assert_array_equal(ds.labels, y)
    np.testing.assert_array_equal(ds.images, x)


def test_tinyimagenet_folders(tinyimagenet_dir):
    train = load_dataset("tinyimagenet", "train", tinyimagenet_dir)
    _check(train, 6, (64, 64, 3), 3)
    assert train.classes == ["goldfish", "European fire salamander", "bullfrog"]
    test = load_dataset("tinyimagenet", "test", tinyimagenet_dir)
    assert test.labels.tolist() == [1, 2, 0]


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "tinyimagenet"])
def test_missing_file_is_named(name, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset(name, "train", tmp_path)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist-ish", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("fashion-mnist", "val")


def test_subset_is_reproducible(fmnist_dir):
    ds = load_dataset("fashion-mnist", "train", fmnist_dir)
    a, b = ds.subset(50, seed=3), ds.subset(50, seed=3)
    assert len(a) == 50
    np.testing.assert_array_equal(a.labels, b.labels)


def test_datasets_module_does_not_import_torch():
    code = "import sys, agilenn.training.datasets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
