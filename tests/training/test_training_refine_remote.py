"""refine_remote: a bundle's remote NN trained on from the bundle alone. The new version keeps the
device part byte for byte, serves the trained weights, and its metrics are what the deployed path
measures; a run cut off mid-way resumes to the same weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny trained bundle (with its integer device part) and the data it was trained on."""
    from training_test_helpers import train_tiny

    root = tmp_path_factory.mktemp("refine_remote")
    data, out, _ = train_tiny(root)
    return root, data, out / "bundle"


def _refine(source, name, *extra):
    from agilenn.training import refine_remote

    root, data, bundle = source
    out = root / name
    refine_remote.main(["--bundle", str(bundle), "--out", str(out), "--version", "2",
                        "--work", str(root / f"{name}-work"),
                        "--epochs", "2", "--batch-size", "64", "--threads", "1", "--data-dir", str(data), *extra])
    return out


@pytest.fixture(scope="module")
def refined(source):
    return _refine(source, "refined")


def test_the_device_part_is_kept_byte_for_byte_and_the_remote_nn_is_new(source, refined):
    _, _, src = source
    for name in ("device.onnx", "device_int8.json", "reference.onnx", "evaluator.onnx"):
        assert (refined / name).read_bytes() == (src / name).read_bytes(), name
    assert (refined / "remote.onnx").read_bytes() != (src / "remote.onnx").read_bytes()
    old, new = (json.loads((d / "manifest.json").read_text()) for d in (src, refined))
    assert new["model"] == {"name": old["model"]["name"], "version": "2"}
    for key in ("quantizer", "coder", "features", "input", "xai", "device_cost"):
        assert new[key] == old[key], key
    assert new["int8_device"]["sha256"] == old["int8_device"]["sha256"]
    r = new["remote_refinement"]
    assert r["source"] == f"{old['model']['name']}/{old['model']['version']}" and len(r["history"]) == 3


def test_the_served_remote_nn_is_the_trained_one(source, refined):
    import onnxruntime as ort

    from agilenn.training.onnx_torch import OnnxModule

    root, _, src = source
    ck = torch.load(root / "refined-work" / "refine_remote.pt", weights_only=False)
    assert ck["epoch"] == 2
    trained = OnnxModule(src / "remote.onnx", trainable=True)
    trained.load_state_dict({k.removeprefix("body."): v for k, v in ck["head"].items() if k.startswith("body.")})
    shape = json.loads((src / "manifest.json").read_text())["features"]
    x = np.random.default_rng(0).random((4, shape["channels"] - shape["k"], shape["height"], shape["width"]),
                                        dtype=np.float32)
    sess = ort.InferenceSession(str(refined / "remote.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], want, rtol=1e-4, atol=1e-5)


def test_the_metrics_are_what_the_deployed_path_measures(source, refined):
    import onnxruntime as ort

    from agilenn.codec import dequantize, quantize
    from agilenn.datasets import load_dataset
    from agilenn.models.bundle import load_bundle

    _, data, _ = source
    b = load_bundle(refined)
    test = load_dataset("fashion-mnist", "test", str(data))
    x, y = b.preprocess(test.images), np.asarray(test.labels)
    dev = ort.InferenceSession(str(refined / "device.onnx"), providers=["CPUExecutionProvider"])
    rem = ort.InferenceSession(str(refined / "remote.onnx"), providers=["CPUExecutionProvider"])
    local, feats = dev.run(["local_logits", "remote_features"], {"image": x})
    centroids = np.asarray(b.manifest["quantizer"]["centroids"], np.float32)
    (remote,) = rem.run(["remote_logits"], {"remote_features": dequantize(quantize(feats, centroids), centroids)})
    m = b.manifest["metrics"]
    assert 0 < b.alpha < 1 and m["alpha"] == b.alpha == b.manifest["remote_refinement"]["trained_alpha"]
    assert m["remote_accuracy"] == pytest.approx(float((remote.argmax(1) == y).mean()))
    merged = b.alpha * local + (1 - b.alpha) * remote
    assert m["combined_accuracy"] == pytest.approx(float((merged.argmax(1) == y).mean()))
    assert m["accuracy_vs_remote_channels"][-1]["remote_accuracy"] == m["remote_accuracy"]
    # the integer device part was measured against the new remote NN, merged with the single alpha
    assert b.manifest["int8_device"]["accuracy"]["float_combined"] == pytest.approx(m["combined_accuracy"])
    # the merge is calibrated for the new remote NN, and every report section is there once
    R = b.manifest["features"]["channels"] - b.manifest["features"]["k"]
    assert m["merge"]["images"] == len(y) and len(b.manifest["merge"]["alpha_by_channels"]) == R + 1
    text = (refined / "report.md").read_text()
    for marker in ("## Remote NN refined on the frozen device part", "<!-- int8-device:begin -->",
                   "## Budget-aware merging", "## XAI audit"):
        assert text.count(marker) == 1, marker
    assert json.loads((refined / "report.json").read_text())["metrics"]["combined_accuracy"] == m["combined_accuracy"]


def test_a_run_cut_off_mid_way_resumes_to_the_same_weights(source, refined, monkeypatch):
    root = source[0]
    real_save = torch.save
    saves = []

    def cut_after_the_first_epoch(obj, path, *a, **kw):
        real_save(obj, path, *a, **kw)
        saves.append(path)
        raise KeyboardInterrupt("cut off")

    monkeypatch.setattr(torch, "save", cut_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        _refine(source, "cut")
    monkeypatch.setattr(torch, "save", real_save)
    assert len(saves) == 1 and not (root / "cut").exists()
    log_before = torch.load(root / "cut-work" / "refine_remote.pt", weights_only=False)
    assert log_before["epoch"] == 1
    resumed = _refine(source, "cut")
    assert (resumed / "remote.onnx").read_bytes() == (refined / "remote.onnx").read_bytes()


def test_a_resume_with_other_settings_is_refused(source, refined):
    from agilenn.training import refine_remote

    root, data, bundle = source
    with pytest.raises(ValueError, match="other settings"):  # "refined-work" ran at the default learning rate
        refine_remote.main(["--bundle", str(bundle), "--out", str(root / "other"), "--version", "3",
                            "--work", str(root / "refined-work"), "--epochs", "2", "--lr", "1e-3",
                            "--batch-size", "64", "--threads", "1", "--data-dir", str(data)])


def test_bad_arguments_are_named(source, tmp_path):
    from agilenn.training import refine_remote

    _, _, bundle = source
    base = ["--bundle", str(bundle), "--version", "2", "--work", str(tmp_path / "w")]
    with pytest.raises(SystemExit):
        refine_remote.main([*base, "--out", str(bundle)])  # exists
    with pytest.raises(SystemExit):
        refine_remote.main([*base, "--out", str(tmp_path / "o"), "--epochs", "0"])
    with pytest.raises(SystemExit):
        refine_remote.main([*base, "--out", str(tmp_path / "o"), "--distill-weight", "2"])
