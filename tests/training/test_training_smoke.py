"""End to end: agilenn-train on a few hundred tiny images, one epoch per stage, gives a bundle the
runtime loads; its ONNX files reproduce the torch model; the manifest's alpha is training's alpha."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from agilenn.training.cli import main

    from training_test_helpers import write_fashion_mnist

    root = tmp_path_factory.mktemp("train_smoke")
    data = write_fashion_mnist(root / "data", n_train=300, n_test=100)
    out = root / "run"
    args = ["--data-dir", str(data), "--out", str(out), "--epochs", "1", "--preselect-samples", "100",
            "--batch-size", "64", "--threads", "2", "--channels", "10", "--body-width", "16"]
    assert main(args) == 0
    return out, out / "bundle", args


def _kept_remote(manifest) -> list[int]:
    """Remote indices (of training's numbering) the bundle kept: the export drops dead ones
    (training/prune_channels.py), which a one-epoch model may or may not have."""
    k, dropped = manifest["features"]["k"], manifest.get("pruned", {}).get("dropped", [])
    trained = manifest.get("pruned", {}).get("trained_channels", manifest["features"]["channels"])
    return [c - k for c in range(k, trained) if c not in dropped]


def _model_from_run(out):
    from agilenn.training.nets import AgileNN, ArchConfig, Body, Stem

    cfg = json.loads((out / "config.json").read_text())
    arch = ArchConfig(**{**cfg["arch"], "input_hw": tuple(cfg["arch"]["input_hw"])})
    model = AgileNN(arch, Stem(arch), Body(arch.channels - arch.k, arch))
    model.load_state_dict(torch.load(out / "ckpt" / "joint.pt", weights_only=False)["model"])
    return model.eval(), arch


def test_bundle_loads_and_has_report(smoke_run):
    from agilenn.models.bundle import load_bundle

    out, bundle_dir, _ = smoke_run
    b = load_bundle(bundle_dir)
    m = b.manifest
    assert m["dataset"] == "fashion-mnist" and m["command"].startswith("agilenn-train ")
    r = len(_kept_remote(m))
    assert m["features"] == {"channels": 2 + r, "k": 2, "height": 7, "width": 7}
    assert m.get("pruned", {}).get("trained_channels", 10) == 10
    p = np.asarray(m["coder"]["symbol_probabilities"])
    assert p.shape == (r, 4) and np.allclose(p.sum(1), 1.0)
    for key in ("reference_accuracy", "combined_accuracy", "local_accuracy", "remote_accuracy", "skewness_mean",
                "skewness_frac_ge_rho", "ans_bytes_mean", "zstd_bytes_mean", "raw_bytes_mean", "png_bytes_mean",
                "accuracy_vs_remote_channels"):
        assert key in m["metrics"], key
    # the export adds the integer device part; the cost is the generated C library's (agilenn.firmware)
    assert b.has_int8_device and m["format_version"] == 2
    assert {"macs", "params", "weight_bytes", "flash_bytes", "arena_bytes"} <= set(m["device_cost"])
    acc = m["int8_device"]["accuracy"]
    assert {"float_local", "int8_local", "float_combined", "int8_combined"} <= set(acc)
    assert "Integer device part (int8)" in (bundle_dir / "report.md").read_text()
    for name in ("report.json", "report.md", "skewness.png", "accuracy_vs_channels.png", "bytes.png"):
        assert (bundle_dir / name).is_file(), name
    assert m["metrics"]["torch_onnx_prediction_agreement"] == 1.0
    # budget-aware merging, calibrated last on the training split through the integer part
    assert len(m["merge"]["alpha_by_channels"]) == r + 1 and m["merge"]["calibration"]["numerics"] == "int8"
    assert m["merge"]["calibration"]["images"] == 300 and len(m["metrics"]["merge"]["rows"]) == r + 1
    assert "## Budget-aware merging" in (bundle_dir / "report.md").read_text()
    assert (bundle_dir / "merge_accuracy_vs_bytes.png").is_file()


def test_manifest_alpha_is_training_alpha(smoke_run):
    out, bundle_dir, _ = smoke_run
    model, _ = _model_from_run(out)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["alpha"] == float(model.alpha.item())
    assert np.float32(manifest["alpha"]) == model.alpha.detach().numpy()


def test_onnx_matches_torch(smoke_run):
    import onnxruntime as ort

    from agilenn.codec import dequantize, quantize
    from agilenn.models.bundle import load_bundle
    from agilenn.datasets import load_dataset

    out, bundle_dir, args = smoke_run
    model, arch = _model_from_run(out)
    b = load_bundle(bundle_dir)
    images = load_dataset("fashion-mnist", "test", args[1]).images[:32]
    x = b.preprocess(images)
    dev = ort.InferenceSession(str(bundle_dir / "device.onnx"), providers=["CPUExecutionProvider"])
    rem = ort.InferenceSession(str(bundle_dir / "remote.onnx"), providers=["CPUExecutionProvider"])
    local, feats = dev.run(["local_logits", "remote_features"], {"image": x})
    with torch.no_grad():
        t = model(torch.from_numpy(x))
    np.testing.assert_allclose(local, t["local"].numpy(), rtol=1e-4, atol=1e-4)
    kept = _kept_remote(b.manifest)
    dropped = [i for i in range(arch.channels - arch.k) if i not in kept]
    np.testing.assert_allclose(feats, t["features"][:, arch.k:][:, kept].numpy(), rtol=1e-4, atol=1e-4)
    centroids = np.asarray(b.manifest["quantizer"]["centroids"], np.float32)
    deq = dequantize(quantize(feats, centroids), centroids)
    np.testing.assert_allclose(deq, t["q"][:, kept].numpy(), atol=1e-5)  # the codec quantizes like training
    (remote,) = rem.run(["remote_logits"], {"remote_features": deq})
    # dropped channels were 0.0 on every training image: where they are on a test image too, the
    # pruned remote NN computes training's function (all of them when nothing was dropped)
    same = (t["q"][:, dropped].reshape(len(x), -1) == 0).all(1).numpy()
    assert same.sum() >= len(x) // 2
    np.testing.assert_allclose(remote[same], t["remote"].numpy()[same], rtol=1e-4, atol=1e-4)
    # training's own alpha reproduces training's merge; Bundle.merge uses the calibrated one per
    # channel count instead (merge.alpha_by_channels, fitted after export: training/merge_calibration.py)
    a = np.float32(b.alpha)
    np.testing.assert_allclose((a * local + (np.float32(1) - a) * remote)[same], t["merged"].numpy()[same],
                               rtol=1e-4, atol=1e-4)
    full = np.float32(b.manifest["merge"]["alpha_by_channels"][-1])
    np.testing.assert_array_equal(b.merge(local, remote), full * local + (np.float32(1) - full) * remote)
    ref = ort.InferenceSession(str(bundle_dir / "reference.onnx"), providers=["CPUExecutionProvider"])
    assert ref.run(["logits"], {"image": x})[0].shape == (32, 10)


def test_resume_skips_finished_stages(smoke_run):
    from agilenn.models.bundle import load_bundle
    from agilenn.training.cli import main

    out, bundle_dir, args = smoke_run
    before = json.loads((bundle_dir / "manifest.json").read_text())["alpha"]
    assert main([*args, "--resume"]) == 0
    text = (out / "train.log").read_text()
    for stage in ("reference", "extractor", "joint"):
        assert f"{stage}: resumed finished stage" in text
    assert load_bundle(bundle_dir).alpha == before


def test_missing_dataset_exits_with_apt_hint(tmp_path, capsys):
    from agilenn.training.cli import main

    assert main(["--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_plain_split_lambda_one(tmp_path):
    """lam = 1 (the plain split baseline) skips the double backprop and still exports a bundle."""
    from agilenn.models.bundle import load_bundle
    from agilenn.training.cli import main

    from training_test_helpers import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    out = tmp_path / "run"
    assert main(["--data-dir", str(data), "--out", str(out), "--epochs", "1", "--preselect-samples", "50",
                 "--channels", "10", "--body-width", "16", "--lam", "1", "--name", "plain-split-test"]) == 0
    b = load_bundle(out / "bundle")
    assert b.name == "plain-split-test" and b.manifest["training"]["config"]["lam"] == 1.0


def test_bundle_carries_what_the_xai_audit_needs(smoke_run):
    from agilenn.training.attribution import audit_bundle

    out, bundle_dir, _ = smoke_run
    m = json.loads((bundle_dir / "manifest.json").read_text())
    assert m["files"]["evaluator"] == "evaluator.onnx" and m["files"]["extractor"] == "extractor.onnx"
    assert sorted(m["xai"]["channel_order"]) == list(range(10)) and m["xai"]["method"] == "ig"
    report = m["metrics"]["xai_audit"]
    assert set(report) >= {"initial", "trained", "samples", "tolerance"}
    again = audit_bundle(bundle_dir, data_dir=out.parent / "data")  # from the bundle's files alone
    assert again["samples"] == report["samples"] == 100
    assert again["trained"]["faithful"]["ig_steps"] == report["trained"]["faithful"]["ig_steps"]
    assert abs(again["trained"]["faithful"]["skewness_mean"] - report["trained"]["faithful"]["skewness_mean"]) < 1e-3
    assert "## XAI audit" in (bundle_dir / "report.md").read_text()


def test_distillation_and_erasing_reach_the_joint_stage(tmp_path):
    """--distill-weight adds the reference's soft labels to the joint loss (same seed and data, the
    only difference: the joint stage's trained weights move); --ref-erase-p changes what the
    reference stage sees; both land in config.json."""
    from agilenn.training.cli import main

    from training_test_helpers import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    base = ["--data-dir", str(data), "--epochs", "1", "--preselect-samples", "50", "--channels", "10",
            "--body-width", "16", "--threads", "1", "--train-only"]
    runs = {}
    for name, extra in (("plain", []), ("kd", ["--distill-weight", "0.5", "--distill-temp", "2"]),
                        ("erase", ["--ref-erase-p", "1"])):
        out = tmp_path / name
        assert main(base + ["--out", str(out)] + extra) == 0
        runs[name] = (json.loads((out / "config.json").read_text()),
                      torch.load(out / "ckpt" / "joint.pt", weights_only=False),
                      torch.load(out / "ckpt" / "reference.pt", weights_only=False))
    (cfg_p, joint_p, ref_p), (cfg_kd, joint_kd, ref_kd), (cfg_er, _, ref_er) = runs["plain"], runs["kd"], runs["erase"]
    assert (cfg_kd["distill_weight"], cfg_kd["distill_temp"], cfg_er["ref_erase_p"]) == (0.5, 2.0, 1.0)
    assert cfg_p["distill_weight"] == 0.0 and cfg_p["ref_erase_p"] == 0.0
    # the reference stage does not distil: identical; the joint stage does: different
    assert all(torch.equal(v, ref_kd["model"][k]) for k, v in ref_p["model"].items())
    assert any(not torch.equal(v, joint_kd["model"][k]) for k, v in joint_p["model"].items() if v.is_floating_point())
    # erasing already changes the reference stage
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "bad"), "--distill-weight", "1.5"])
    assert any(not torch.equal(v, ref_er["model"][k]) for k, v in ref_p["model"].items() if v.is_floating_point())


def test_stem_expansion_trains_exports_and_runs_as_integers(tmp_path):
    """--stem-expand E puts a 1x1 conv (BN, ReLU6) to E channels between the stem's first conv and its
    depthwise conv: the exported device part carries it, the integer device part runs it as one more
    conv1x1 layer that tracks the float one, and it costs the MACs the formula says."""
    from agilenn.firmware.cost import bundle_device_cost
    from agilenn.models.bundle import load_bundle
    from agilenn.training.cli import main

    from training_test_helpers import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    assert main(["--data-dir", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--preselect-samples",
                 "50", "--channels", "10", "--body-width", "16", "--stem-width", "6", "--stem-expand", "12",
                 "--threads", "1"]) == 0
    b = load_bundle(tmp_path / "run" / "bundle")
    assert b.manifest["training"]["config"]["arch"]["stem_expand"] == 12
    layers = b.int8_device().extractor
    assert [layer.kind for layer in layers] == ["conv", "conv1x1", "dwconv", "conv1x1"]
    assert [layer.out_channels for layer in layers[:3]] == [6, 12, 12]
    agreement = b.manifest["int8_device"]["accuracy"]
    assert agreement["index_agreement"] > 0.9 and agreement["local_prediction_agreement"] > 0.8
    # 28x28 -> 14x14 (first conv, expansion) -> 7x7 (depthwise, last 1x1 to the kept channels)
    channels = layers[3].out_channels
    expected = 14 * 14 * 6 * 9 + 14 * 14 * 12 * 6 + 7 * 7 * 12 * 9 + 7 * 7 * channels * 12
    hw, macs = (28, 28), 0
    for layer in layers:
        hw = layer.out_hw(*hw)
        macs += hw[0] * hw[1] * int(np.prod(layer.weights.shape))
    assert macs == expected
    assert bundle_device_cost(b)["macs"] > macs  # plus the local predictor
