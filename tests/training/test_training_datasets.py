"""Dataset readers on tiny fixtures in each on-disk format. numpy-only: no torch needed."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agilenn.datasets import DatasetNotFoundError, load_dataset


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
    code = "import sys, agilenn.datasets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_datasets_still_imports_for_old_callers():
    from agilenn.training import datasets as old

    assert old.load_dataset is load_dataset


# ---------------------------------------------------------------- CIFAR pickles written by Python 3

def test_cifar10_pickles_with_bytes_keys(tmp_path, make_images):
    import pickle

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    x, y = make_images(3, 32, 32, 3, 10, 0)
    rows = x.transpose(0, 3, 1, 2).reshape(3, -1)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": rows, b"labels": y.tolist(), b"batch_label": b"x"}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    ds = load_dataset("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(ds.images, x)
    assert ds.classes[2] == "c2"


def test_cifar_pickle_without_data_names_file_and_keys(tmp_path):
    import pickle

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({"pixels": [], "labels": []}, fh)
    with pytest.raises(ValueError, match=r"test_batch: CIFAR pickle has no 'data' entry \(it has \['labels', 'pixels'\]\)"):
        load_dataset("cifar10", "test", tmp_path)


# ---------------------------------------------------------------- imagefolder:PATH

def _write_folder(root, split, per_class, size, mode, fmt, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays = {}
    for cls, n in per_class.items():
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(a, mode).save(folder / f"{i:03d}.{fmt}")
            arrays[(cls, i)] = a
    return arrays


def test_imagefolder_png_rgb_sorted_classes(tmp_path):
    arrays = _write_folder(tmp_path, "train", {"zebra": 2, "ant": 3}, (12, 10), "RGB", "png")
    _write_folder(tmp_path, "test", {"ant": 1, "zebra": 1}, (12, 10), "RGB", "png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image: ignored")
    ds = load_dataset(f"imagefolder:{tmp_path}", "train")
    _check(ds, 5, (12, 10, 3), 2)
    assert ds.classes == ["ant", "zebra"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images[3], arrays[("zebra", 0)])  # PNG is lossless: exact pixels
    assert load_dataset(f"imagefolder:{tmp_path}", "test").labels.tolist() == [0, 1]


def test_imagefolder_mixed_sizes_follow_the_first_train_image(tmp_path):
    _write_folder(tmp_path, "train", {"a": 1, "b": 1}, (20, 16), "L", "png")
    _write_folder(tmp_path, "test", {"a": 2}, (40, 8), "RGB", "jpg")
    test = load_dataset(f"imagefolder:{tmp_path}", "test")
    _check(test, 2, (20, 16, 1), 2)  # grayscale train -> C=1, test resized and converted to match
    rgb = load_dataset(f"imagefolder:{tmp_path}", "test", image_size=(8, 8), channels=3)
    assert rgb.images.shape == (2, 8, 8, 3)


def test_imagefolder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="image folder split not found"):
        load_dataset(f"imagefolder:{tmp_path}", "train")
    _write_folder(tmp_path, "train", {"a": 1, "b": 1}, (8, 8), "L", "png")
    _write_folder(tmp_path, "test", {"a": 1, "c": 1}, (8, 8), "L", "png")
    with pytest.raises(ValueError, match=r"class folders \['c'\] are not in"):
        load_dataset(f"imagefolder:{tmp_path}", "test")
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png: not a readable JPEG/PNG image"):
        load_dataset(f"imagefolder:{tmp_path}", "train")
    with pytest.raises(ValueError, match="imagefolder needs a path"):
        load_dataset("imagefolder:", "train")
    with pytest.raises(ValueError, match="apply to imagefolder datasets only"):
        load_dataset("fashion-mnist", "train", image_size=(8, 8))


def test_check_dataset_name():
    from agilenn.datasets import check_dataset_name

    assert check_dataset_name("FMNIST") == "fashion-mnist"
    assert check_dataset_name("imagefolder:/x/y") == "imagefolder:/x/y"
    with pytest.raises(ValueError, match="imagefolder:PATH"):
        check_dataset_name("mnist")
