"""Bundle loading validates the manifest and the ONNX files against each other, with clear errors."""


import numpy as np
import onnxruntime as ort
import pytest
from agilenn.models import BundleError, ModelNotFound, ModelRepository, load_bundle
from agilenn.models.synthetic import make_random_bundle
from bundle_test_helpers import clone


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("bundle") / "b")


def test_synthetic_bundle_loads_and_runs(bundle_dir):
    b = load_bundle(bundle_dir)
    assert (b.name, b.version, b.num_classes, b.remote_feature_shape) == ("synthetic", "1", 10, (6, 7, 7))
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    x = b.preprocess(images)
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    local, remote = ort.InferenceSession(str(b.onnx_path("device"))).run(["local_logits", "remote_features"], {"image": x})
    assert local.shape == (4, 10) and remote.shape == (4, 6, 7, 7)
    codec = b.codec()
    decoded = codec.decode(codec.encode(remote[0]))
    (logits,) = ort.InferenceSession(str(b.onnx_path("remote"))).run(None, {"remote_features": decoded.features[None]})
    assert logits.shape == (1, 10)
    merged = b.merge(local[:1], logits)
    assert np.allclose(merged, 0.5 * local[:1] + 0.5 * logits)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format_version=99), "unknown format_version 99"),
        (lambda m: m.update(format="zip"), "'format' must be"),
        (lambda m: m["model"].pop("version"), "model.version"),
        (lambda m: m["features"].update(k=0), "features.k"),
        (lambda m: m["features"].update(k=8), "features.k"),
        (lambda m: m["quantizer"].update(centroids=[1.0, 0.0]), "strictly ascending"),
        (lambda m: m.update(alpha=1.5), "'alpha' must be a number in"),
        (lambda m: m["coder"].update(symbol_probabilities=[[0.5, 0.5]]), "symbol_probabilities"),
        (lambda m: m["coder"].update(default="lzma"), "coder.default"),
        (lambda m: m["input"].update(mean=[0.1, 0.2]), "input.mean"),
        (lambda m: m.update(classes=["only"]), "'classes'"),
        (lambda m: m["files"].update(device="../etc/passwd"), "plain file name"),
    ],
)
def test_manifest_errors_name_the_field(bundle_dir, tmp_path, edit, message):
    with pytest.raises(BundleError, match=message):
        load_bundle(clone(bundle_dir, tmp_path, edit))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["features"].update(channels=9), "remote_features' dim 1 is 6, the manifest implies 7"),
        (lambda m: m["features"].update(height=14), "dim 2 is 7, the manifest implies 14"),
        (lambda m: m.update(classes=[f"c{i}" for i in range(5)]), "local_logits' dim 1 is 10, the manifest implies 5"),
        (lambda m: m["input"].update(shape=[3, 28, 28], mean=[0, 0, 0], std=[1, 1, 1]), "input 'image' dim 1 is 1"),
    ],
)
def test_manifest_and_onnx_must_agree(bundle_dir, tmp_path, edit, message):
    def both(m):
        edit(m)
        ch = m["features"]["channels"] - m["features"]["k"]
        m["coder"]["symbol_probabilities"] = [[0.25] * 4] * ch
        m["coder"]["frequencies"] = [[1 << (m["coder"]["frequency_bits"] - 2)] * 4] * ch

    with pytest.raises(BundleError, match=message):
        load_bundle(clone(bundle_dir, tmp_path, both))


def test_missing_files(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    out = clone(bundle_dir, tmp_path)
    (out / "remote.onnx").unlink()
    with pytest.raises(BundleError, match="missing remote model file remote.onnx"):
        load_bundle(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="invalid JSON"):
        load_bundle(out)
    (out / "manifest.json").unlink()
    with pytest.raises(BundleError, match="missing manifest.json"):
        load_bundle(out)


def test_corrupt_onnx_is_named(bundle_dir, tmp_path):
    out = clone(bundle_dir, tmp_path)
    (out / "device.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(BundleError, match="device.onnx: not a readable ONNX model"):
        load_bundle(out)


def test_repository_selects_by_name_and_version(tmp_path):
    repo = tmp_path / "repo"
    for name, version in [("alpha", "1"), ("alpha", "2"), ("alpha", "10"), ("beta", "1")]:
        make_random_bundle(repo / name / version, name=name, version=version, with_reference=False)
    r = ModelRepository([repo])
    assert r.models() == [("alpha", "1"), ("alpha", "2"), ("alpha", "10"), ("beta", "1")]
    assert r.resolve("alpha").version == "10"  # numeric, not lexical
    assert r.resolve("beta", "1").name == "beta"
    assert r.resolve().name == "alpha"  # the first model found is the default when the shipped one is absent
    with pytest.raises(ModelNotFound, match="'gamma' is not served"):
        r.resolve("gamma")
    with pytest.raises(ModelNotFound, match="version '3'"):
        r.resolve("alpha", "3")
    # a single bundle directory works as a path too, and duplicates are refused
    assert ModelRepository([repo / "beta" / "1"]).resolve().name == "beta"
    with pytest.raises(BundleError, match="served twice"):
        ModelRepository([repo, repo / "beta" / "1"])
