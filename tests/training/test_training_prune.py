"""Dropping dead remote channels from a bundle (training/prune_channels.py), on a synthetic bundle
whose extractor has two remote channels that are zero on every image (weights 0, bias < 0, ReLU)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from onnx import numpy_helper

from agilenn.datasets import Dataset
from agilenn.models import BundleError, load_bundle
from agilenn.models.synthetic import make_random_bundle
from agilenn.training import prune_channels as P

K, CHANNELS = 2, 8
DEAD_FEATURES = [5, 7]  # remote indices 3 and 5


def _kill_channels(bundle_dir, features: list[int]) -> None:
    """Zero weights and a negative bias: the ReLU sends 0.0 there on every image."""
    import onnx

    path = bundle_dir / "device.onnx"
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    w, b = numpy_helper.to_array(inits["ext_w"]).copy(), numpy_helper.to_array(inits["ext_b"]).copy()
    w[features], b[features] = 0.0, -1.0
    inits["ext_w"].CopyFrom(numpy_helper.from_array(w, "ext_w"))
    inits["ext_b"].CopyFrom(numpy_helper.from_array(b, "ext_b"))
    onnx.save(model, str(path))


def _split(name: str, n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("synthetic", name, rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                   rng.integers(0, 10, n).astype(np.int64), [f"class_{i}" for i in range(10)])


@pytest.fixture(scope="module")
def data():
    return _split("train", 240, 1), _split("test", 120, 2)


@pytest.fixture(scope="module")
def dead_bundle(tmp_path_factory, data):
    """A complete bundle (integer part, rans-ctx tables, merge) with two dead remote channels."""
    from agilenn.firmware.bundle_int8 import add_int8_device
    from agilenn.training.context_tables import add_context_tables
    from agilenn.training.merge_calibration import add_merge_calibration

    train, test = data
    path = make_random_bundle(tmp_path_factory.mktemp("dead") / "b", channels=CHANNELS, k=K, default_coder="rans",
                              seed=4)
    _kill_channels(path, DEAD_FEATURES)
    # the calibration rule of the trainer and of agilenn-firmware quantize, which pruning repeats
    add_int8_device(path, train.subset(100, seed=0).images, test.images, test.labels,
                    calibration_label="synthetic train, 100 images (seed 0)")
    add_context_tables(path, train.images, test.images)
    add_merge_calibration(path, (train.images, train.labels), (test.images, test.labels), report=False)
    return path


@pytest.fixture
def pruned(dead_bundle, data, tmp_path):
    """(bundle before, bundle after, the returned 'pruned' section)."""
    before = tmp_path / "before"
    shutil.copytree(dead_bundle, before)
    after = tmp_path / "after"
    shutil.copytree(dead_bundle, after)
    train, test = data
    section = P.prune_dead_channels(after, train, test, command="test")
    return load_bundle(before), load_bundle(after), section


def test_finds_the_dead_channels_in_float_and_int8(dead_bundle, data):
    found = P.find_dead_channels(load_bundle(dead_bundle), data[0].images)
    remote = [c - K for c in DEAD_FEATURES]
    assert found["per_numerics"] == {"float": remote, "int8": remote}
    assert found["dead"] == remote and found["zero_index"] == 0


def test_pruned_bundle_gives_the_same_logits_and_predictions(pruned, data):
    before, after, section = pruned
    images = data[1].images
    assert after.channels == CHANNELS - len(DEAD_FEATURES) and after.k == K
    assert section["dropped"] == DEAD_FEATURES and section["trained_channels"] == CHANNELS
    keep = [i for i in range(before.remote_channels) if i + K not in DEAD_FEATURES]
    for numerics in ("float", "int8"):
        lb, ib = P.device_outputs(before, images, numerics)
        la, ia = P.device_outputs(after, images, numerics)
        assert np.array_equal(lb, la), numerics  # the local part is untouched
        assert np.array_equal(ib[:, keep], ia), numerics  # the kept channels send the same symbols
        assert (ib[:, [c - K for c in DEAD_FEATURES]] == 0).all()
        rb = P.deployed_results(before, images, data[1].labels)[numerics]
        ra = P.deployed_results(after, images, data[1].labels)[numerics]
        np.testing.assert_allclose(rb["remote"], ra["remote"], rtol=0, atol=1e-5)
        alpha = np.float32(before.alpha)
        merged = lambda r: (alpha * r["local"] + (np.float32(1) - alpha) * r["remote"]).argmax(1)  # noqa: E731
        assert np.array_equal(merged(rb), merged(ra))
        assert section["check"]["numerics"][numerics]["predictions_changed"] == 0
        assert section["check"]["numerics"][numerics]["images_with_dropped_channel_nonzero"] == 0
    assert section["check"]["int8_kept_integers_identical"] is True  # same calibration, same integers
    # raw coding pays for every symbol: 2 of 6 remote channels fewer is a third less body
    raw = section["check"]["numerics"]["int8"]["bytes_mean"]["raw"]
    assert raw[1] < raw[0]


def test_pruned_bundle_is_complete_and_valid(pruned, data):
    before, after, _ = pruned
    m = after.manifest
    r = after.remote_channels
    assert len(m["coder"]["symbol_probabilities"]) == r and len(m["coder"]["frequencies"]) == r
    assert len(m["coder"]["context"]["row_map"]) == r and "provisional" not in m["coder"]["context"]["fitted_on"]
    assert len(m["merge"]["alpha_by_channels"]) == r + 1
    assert after.int8_device().feature_hwc[2] == after.channels
    assert m["device_cost"]["macs"] < before.manifest["device_cost"]["macs"]
    # every coder round-trips the pruned symbols
    _, idx = P.device_outputs(after, data[1].images[:5], "int8")
    codec = after.codec()
    for coder in codec.available_coders:
        for j in range(len(idx)):
            assert np.array_equal(codec.decode_indices(codec.encode_indices(idx[j], coder))[0], idx[j]), coder


def test_refuses_when_no_channel_is_dead(tmp_path, fmnist_dir, capsys):
    path = make_random_bundle(tmp_path / "alive", channels=CHANNELS, k=K, seed=4)  # positive biases: all alive
    manifest = (path / "manifest.json").read_text()
    rc = P.main(["--bundle", str(path), "--dataset", "fashion-mnist", "--data-dir", str(fmnist_dir)])
    assert rc == P.EXIT_NOTHING_TO_PRUNE
    assert "no dead remote channel" in capsys.readouterr().err
    assert (path / "manifest.json").read_text() == manifest  # nothing written


def test_never_drops_a_local_channel(tmp_path, data):
    path = make_random_bundle(tmp_path / "b", channels=CHANNELS, k=K, seed=4)
    _kill_channels(path, [0, 6])  # one local, one remote channel always zero
    section = P.prune_dead_channels(path, *data, command="test")
    assert section["dropped"] == [6]
    assert load_bundle(path).k == K
    with pytest.raises(P.PruneError, match="local channel"):
        P.prune_device_onnx(path / "device.onnx", tmp_path / "x.onnx", [1, 2, 3], K)


def test_validator_checks_the_pruned_record(pruned):
    _, after, _ = pruned
    manifest = json.loads((after.path / "manifest.json").read_text())
    for bad in ({"trained_channels": after.channels, "dropped": []},  # nothing dropped
                {"trained_channels": CHANNELS, "dropped": [1, 5]},  # a local channel
                {"trained_channels": CHANNELS, "dropped": [7, 5]}):  # not ascending
        (after.path / "manifest.json").write_text(json.dumps({**manifest, "pruned": {**manifest["pruned"], **bad}}))
        with pytest.raises(BundleError, match="pruned"):
            load_bundle(after.path)


def test_the_shipped_bundle_ships_no_dead_channel():
    """agilenn-fashion-mnist v1 had 4 remote channels at 0.0 on every training image; they are dropped
    (its manifest says which and why) and every remaining one carries information."""
    from agilenn.models import DEFAULT_REPOSITORY, ModelRepository
    from agilenn.training.datasets import load_dataset

    bundle = ModelRepository([DEFAULT_REPOSITORY]).resolve("agilenn-fashion-mnist", "1")
    pruned = bundle.manifest["pruned"]
    assert (pruned["trained_channels"], pruned["dropped"], bundle.channels) == (24, [20, 21, 22, 23], 20)
    assert all(c["predictions_changed"] == 0 for c in pruned["check"]["numerics"].values())
    found = P.find_dead_channels(bundle, load_dataset("fashion-mnist", "train").images)
    assert found["per_numerics"] == {"float": [], "int8": []}


def test_report_rewrite_is_idempotent():
    """Rewriting report.md twice gives the same text: rows, channel table and this tool's section
    are replaced, not appended (the int8 and merge sections stay where they are)."""
    from agilenn.models import DEFAULT_REPOSITORY

    bundle_dir = DEFAULT_REPOSITORY / "agilenn-fashion-mnist" / "1"
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    text = (bundle_dir / "report.md").read_text()
    section = P.report_section(manifest["pruned"], None, None)
    once = P._replace_section(P._rewrite_rows(text, manifest["metrics"]), section)
    assert P._replace_section(P._rewrite_rows(once, manifest["metrics"]), section) == once
    assert once.count(P.REPORT_SECTION) == 1 and once.count("<!-- int8-device:begin -->") == 1
    assert once.index(P.REPORT_SECTION) < once.index("<!-- int8-device:begin -->") < once.index("## Budget-aware merging")
    assert "| 15 | 125.0 |" in once and "| 19 |" not in once
