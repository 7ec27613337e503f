"""Budget-aware merging: alpha per channel count in the bundle (validation, Bundle.merge) and its
calibration (training/merge_calibration.py, numpy + onnxruntime, no torch)."""

import json

import numpy as np
import pytest
from agilenn.models import BundleError, load_bundle
from agilenn.models.synthetic import make_random_bundle
from agilenn.training import merge_calibration as mc
from bundle_test_helpers import clone

REMOTE = 6  # make_random_bundle's default: 8 channels, k = 2
MERGE = {"alpha_by_channels": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.25], "min_channels": 2}


@pytest.fixture(scope="module")
def calibrated_dir(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("merge") / "b", merge=MERGE)


def test_merge_uses_the_alpha_of_the_channel_count(calibrated_dir):
    b = load_bundle(calibrated_dir)
    rng = np.random.default_rng(0)
    local, remote = rng.normal(size=(3, 10)).astype(np.float32), rng.normal(size=(3, 10)).astype(np.float32)
    for m, a in enumerate(MERGE["alpha_by_channels"]):
        assert b.alpha_for(m) == a
        a32 = np.float32(a)
        np.testing.assert_array_equal(b.merge(local, remote, m), a32 * local + (np.float32(1) - a32) * remote)
    np.testing.assert_array_equal(b.merge(local, remote), b.merge(local, remote, REMOTE))  # default: all channels
    assert b.min_channels == 2
    with pytest.raises(ValueError, match="channels_sent must be in 0..6"):
        b.merge(local, remote, REMOTE + 1)


def test_bundle_without_merge_keeps_its_single_alpha(tmp_path):
    b = load_bundle(make_random_bundle(tmp_path / "old", alpha=0.3))
    assert all(b.alpha_for(m) == 0.3 for m in range(REMOTE + 1)) and b.min_channels == 0


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(merge=[0.5]), "'merge' must be an object"),
    (lambda m: m["merge"].update(alpha_by_channels=[0.5] * REMOTE), "'merge.alpha_by_channels' must list 7 numbers"),
    (lambda m: m["merge"].pop("alpha_by_channels"), "'merge.alpha_by_channels' must list 7"),
    (lambda m: m["merge"]["alpha_by_channels"].__setitem__(3, 1.5), r"'merge.alpha_by_channels\[3\]' must be"),
    (lambda m: m["merge"]["alpha_by_channels"].__setitem__(0, "0.5"), r"'merge.alpha_by_channels\[0\]' must be"),
    (lambda m: m["merge"]["alpha_by_channels"].__setitem__(1, True), r"'merge.alpha_by_channels\[1\]' must be"),
    (lambda m: m["merge"].update(min_channels=REMOTE + 2), "'merge.min_channels' must be an int in 0..7"),
    (lambda m: m["merge"].update(min_channels=-1), "'merge.min_channels'"),
    (lambda m: m["merge"].update(min_channels=1.0), "'merge.min_channels'"),
    (lambda m: m["merge"].pop("min_channels"), "'merge.min_channels'"),
])
def test_bad_merge_fields_are_named(calibrated_dir, tmp_path, edit, message):
    with pytest.raises(BundleError, match=message):
        load_bundle(clone(calibrated_dir, tmp_path, edit))


def test_fit_alpha_maximizes_accuracy_and_breaks_ties_deterministically():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 400)
    # remote logits right everywhere, local right on half: any alpha below the crossover is perfect;
    # the tie goes to the lowest cross-entropy, which is alpha = 0 (all weight on the sure remote).
    remote = np.eye(10, dtype=np.float32)[labels] * 5
    local = np.where(rng.random((400, 1)) < 0.5, np.eye(10, dtype=np.float32)[labels],
                     np.eye(10, dtype=np.float32)[(labels + 1) % 10]) * 5
    assert mc.fit_alpha(local, remote, labels) == 0.0
    # identical logits: every alpha gives the same accuracy and cross-entropy; the larger alpha wins
    assert mc.fit_alpha(local, local, labels) == 1.0
    # the same data twice gives the same alpha (and alpha = 1 reproduces local-only exactly)
    noisy = remote + rng.normal(0, 4, remote.shape).astype(np.float32)
    a = mc.fit_alpha(local, noisy, labels)
    assert a == mc.fit_alpha(local, noisy, labels) and a in mc.ALPHA_GRID
    acc = lambda z: (z.argmax(1) == labels).mean()  # noqa: E731
    assert acc(mc.merged(a, local, noisy)) >= max(acc(mc.merged(g, local, noisy)) for g in mc.ALPHA_GRID)


def test_break_even_is_the_first_count_from_which_on_every_count_beats_local():
    assert mc.break_even([(0.0, 0.01), (0.05, 0.01), (0.06, 0.01)]) == 1
    assert mc.break_even([(0.0, 0.01), (0.05, 0.01), (0.01, 0.01), (0.06, 0.01)]) == 3  # 2 is within noise
    assert mc.break_even([(0.03, 0.01), (0.05, 0.01)]) == 0
    assert mc.break_even([(0.0, 0.01), (-0.01, 0.01)]) == 2  # never worth it: never send
    labels = np.array([0, 0, 0, 0])
    assert mc.paired_gain(np.array([0, 0, 0, 1]), np.array([1, 1, 0, 0]), labels)[0] == 0.25


def test_calibration_of_a_bundle_is_deterministic_and_valid(tmp_path, fashion_train_small, fashion_test_small):
    bundle_dir = make_random_bundle(tmp_path / "b", seed=5)
    table = mc.add_merge_calibration(bundle_dir, fashion_train_small, fashion_test_small)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    merge = manifest["merge"]
    b = load_bundle(bundle_dir)  # the written manifest validates
    assert len(merge["alpha_by_channels"]) == REMOTE + 1 and b.min_channels == merge["min_channels"]
    again = mc.calibrate(b, *fashion_train_small, "again")
    assert again["alpha_by_channels"] == merge["alpha_by_channels"] and again["min_channels"] == merge["min_channels"]
    # on its own training data, alpha_m never does worse than local-only (alpha = 1 is on the grid)
    cal = merge["calibration"]
    assert all(acc >= cal["local_accuracy"] for acc in cal["combined_accuracy"])
    assert [r["channels"] for r in table["rows"]] == list(range(REMOTE + 1))
    assert manifest["metrics"]["merge"] == table
    # the rows' bytes are those of the real payloads the agent would send
    codec = b.codec()
    _, indices = mc.device_outputs(b, fashion_test_small[0][:20])
    for m in (0, 3, REMOTE):
        sizes = [len(codec.encode_indices(x, None, m)) for x in indices]
        assert mc.payload_bytes_mean(codec, indices, m) == pytest.approx(np.mean(sizes))
    report = (bundle_dir / "report.md").read_text()
    assert report.count(mc.REPORT_SECTION) == 1 and (bundle_dir / mc.PLOT).is_file()
    mc.add_merge_calibration(bundle_dir, fashion_train_small, fashion_test_small)  # rerun replaces, not appends
    assert (bundle_dir / "report.md").read_text().count(mc.REPORT_SECTION) == 1


def test_remote_logits_zero_fill_exactly_as_the_server_decodes(tmp_path, fashion_test_small):
    b = load_bundle(make_random_bundle(tmp_path / "b", seed=6))
    from agilenn.device_agent.device_model import single_thread_session
    from agilenn.models.bundle import REMOTE_INPUT, REMOTE_LOGITS

    session = single_thread_session(b.onnx_path("remote"))
    _, indices = mc.device_outputs(b, fashion_test_small[0][:8])
    codec = b.codec()
    for m in (0, 2, REMOTE):
        ours = mc.remote_logits(b, session, indices, m)
        feats = np.stack([codec.decode(codec.encode_indices(x, None, m)).features for x in indices])
        np.testing.assert_array_equal(ours, session.run([REMOTE_LOGITS], {REMOTE_INPUT: feats})[0])


@pytest.fixture(scope="module")
def fashion_train_small():
    d = _fashion("train")
    return d.images[:3000], d.labels[:3000]


@pytest.fixture(scope="module")
def fashion_test_small():
    d = _fashion("test")
    return d.images[:1000], d.labels[:1000]


def _fashion(split):
    from agilenn.datasets import DatasetNotFoundError, load_dataset

    try:
        return load_dataset("fashion-mnist", split)
    except DatasetNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
