"""--merge-holdout: training images no stage trains on (the reference's included), where the merge
calibration fits alpha (on CIFAR-10 it had fitted on images the nets had memorised: 98.6 % combined
there against 88.4 % on the test split). The split is fixed by the seed, the trainer and
refine_remote agree on it, and the calibration says which images it used."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

HELD = 60  # of train_tiny's 300 training images


def test_the_split_is_fixed_by_the_seed_disjoint_and_whole():
    from agilenn.training.data import merge_holdout_split

    held, kept = merge_holdout_split(300, HELD, seed=0)
    assert len(held) == HELD and len(kept) == 300 - HELD
    assert sorted(held.tolist() + kept.tolist()) == list(range(300))
    assert np.array_equal(held, np.sort(held))
    assert np.array_equal(held, merge_holdout_split(300, HELD, seed=0)[0])
    assert not np.array_equal(held, merge_holdout_split(300, HELD, seed=1)[0])
    # never a prefix: image folders load class by class
    assert held.max() > HELD
    assert len(merge_holdout_split(300, 0, seed=0)[0]) == 0


@pytest.mark.parametrize("n", [300, 301, -1])
def test_a_holdout_that_leaves_nothing_to_train_on_is_refused(n):
    from agilenn.training.data import merge_holdout_split

    with pytest.raises(ValueError, match=f"merge hold-out: {n} images asked for, the training split has 300"):
        merge_holdout_split(300, n, seed=0)


def test_no_stage_trains_on_the_held_out_images(tmp_path):
    """Not even the reference: the extractor starts as its stem and the remote NN as its body, so what
    it trained on the nets the merge weighs half-remember (CIFAR-10 v5, held out after stage 1 only)."""
    from training_test_helpers import write_fashion_mnist

    from agilenn.datasets import load_dataset
    from agilenn.training.data import merge_holdout_rows
    from agilenn.training.trainer import Run, TrainConfig

    data = write_fashion_mnist(tmp_path / "data", n_train=300, n_test=50)
    cfg = TrainConfig(data_dir=str(data), out=str(tmp_path / "run"), threads=1, batch_size=64, merge_holdout=HELD)
    run = Run(cfg)
    assert len(run.y_train) == len(run.train_raw) == 300 - HELD and run.x_batches.shape[0] == 300 - HELD
    assert run.steps_per_epoch() == math.ceil((300 - HELD) / 64)
    images, labels, note = run.merge_calibration_split()
    assert len(labels) == HELD and f"{HELD} images held out of every stage" in note
    trained = {im.tobytes() for im in run.train_raw.images}
    assert not any(im.tobytes() in trained for im in images)
    # refine_remote's helper redoes the same split from the bundle's training config
    kept, held = merge_holdout_rows(load_dataset("fashion-mnist", "train", str(data)), cfg.to_dict())
    assert np.array_equal(images, held.images) and np.array_equal(labels, held.labels)
    assert np.array_equal(kept.images, run.train_raw.images)


def test_without_a_holdout_nothing_changes(tmp_path):
    from training_test_helpers import write_fashion_mnist

    from agilenn.training.trainer import Run, TrainConfig

    data = write_fashion_mnist(tmp_path / "data", n_train=300, n_test=50)
    run = Run(TrainConfig(data_dir=str(data), out=str(tmp_path / "run"), threads=1))
    assert run.x_batches.shape[0] == 300 and run.merge_holdout_raw is None
    images, _, note = run.merge_calibration_split()
    assert len(images) == 300 and note is None


@pytest.fixture(scope="module")
def held_out_bundle(tmp_path_factory):
    from training_test_helpers import train_tiny

    root = tmp_path_factory.mktemp("merge_holdout")
    data, out, _ = train_tiny(root, 60, "--merge-holdout", str(HELD))
    return root, data, out / "bundle"


def test_the_export_calibrates_the_merge_on_the_held_out_images(held_out_bundle):
    _, _, bundle = held_out_bundle
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["training"]["config"]["merge_holdout"] == HELD
    cal = m["merge"]["calibration"]
    assert cal["images"] == HELD and f"{HELD} images held out of every stage" in cal["split"]
    assert f"{HELD} images held out" in (bundle / "report.md").read_text()
    assert f"merge hold-out: {HELD} training images set aside" in (bundle.parent / "train.log").read_text()


def test_refine_remote_leaves_the_holdout_out_and_calibrates_on_it(held_out_bundle):
    from agilenn.training import refine_remote

    root, data, bundle = held_out_bundle
    out = root / "refined"
    refine_remote.main(["--bundle", str(bundle), "--out", str(out), "--version", "2", "--work", str(root / "work"),
                        "--epochs", "1", "--batch-size", "64", "--threads", "1", "--data-dir", str(data)])
    cal = json.loads((out / "manifest.json").read_text())["merge"]["calibration"]
    assert cal["images"] == HELD and "held out" in cal["split"]
