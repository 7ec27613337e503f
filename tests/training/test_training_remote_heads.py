"""After the joint stage, ``--remote-heads``: extra remote NNs on the frozen device part, averaged with the joint
stage's. The bundle's remote.onnx is that average, the device part is the joint stage's unchanged,
alpha is the refitted one, and a run cut off inside the stage resumes there."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

@pytest.fixture(scope="module")
def heads_run(tmp_path_factory):
    from training_test_helpers import train_tiny

    return train_tiny(tmp_path_factory.mktemp("remote_heads"), 60, "--remote-heads", "2")


def _arch(out):
    from agilenn.training.nets import ArchConfig

    cfg = json.loads((out / "config.json").read_text())
    return ArchConfig(**{**cfg["arch"], "input_hw": tuple(cfg["arch"]["input_hw"])}), cfg


def test_the_bundle_serves_the_average_of_the_joint_remote_and_the_heads(heads_run):
    import onnxruntime as ort

    from agilenn.codec import dequantize, quantize
    from agilenn.datasets import load_dataset
    from agilenn.models.bundle import load_bundle
    from agilenn.training.nets import AgileNN, Body, RemoteEnsemble, Stem

    data, out, _ = heads_run
    arch, cfg = _arch(out)
    assert (cfg["remote_heads"], cfg["remote_epochs"]) == (2, 1)
    R = arch.channels - arch.k
    joint = AgileNN(arch, Stem(arch), Body(R, arch))
    joint.load_state_dict(torch.load(out / "ckpt" / "joint.pt", weights_only=False)["model"])
    stage = torch.load(out / "ckpt" / "remote_heads.pt", weights_only=False)
    assert len(stage["heads"]) == 2 and stage["current"] is None
    heads = []
    for state in stage["heads"]:
        h = Body(R, arch)
        h.load_state_dict(state)
        heads.append(h)
    # copies of the joint stage's remote NN trained on with their own seeds: neither it nor each other
    w = lambda m: m.entry[0].weight  # noqa: E731
    assert not torch.equal(w(heads[0]), w(heads[1])) and not torch.equal(w(heads[0]), w(joint.remote))
    ensemble = RemoteEnsemble([joint.remote, *heads]).eval()
    joint.eval()

    b = load_bundle(out / "bundle")
    x = b.preprocess(load_dataset("fashion-mnist", "test", str(data)).images[:32])
    dev = ort.InferenceSession(str(out / "bundle" / "device.onnx"), providers=["CPUExecutionProvider"])
    rem = ort.InferenceSession(str(out / "bundle" / "remote.onnx"), providers=["CPUExecutionProvider"])
    local, feats = dev.run(["local_logits", "remote_features"], {"image": x})
    with torch.no_grad():
        t = joint(torch.from_numpy(x))
    # the device part is the joint stage's, untouched by the extra heads
    np.testing.assert_allclose(local, t["local"].numpy(), rtol=1e-4, atol=1e-4)
    kept = [c - arch.k for c in range(arch.k, arch.channels) if c not in b.manifest.get("pruned", {}).get("dropped", [])]
    centroids = np.asarray(b.manifest["quantizer"]["centroids"], np.float32)
    deq = dequantize(quantize(feats, centroids), centroids)
    (remote,) = rem.run(["remote_logits"], {"remote_features": deq})
    full = np.zeros((len(x), R, *deq.shape[2:]), np.float32)
    full[:, kept] = deq  # a dropped channel is one the remote NN only ever saw as 0.0
    with torch.no_grad():
        want = ensemble(torch.from_numpy(full)).numpy()
    np.testing.assert_allclose(remote, want, rtol=1e-4, atol=1e-4)
    alpha = torch.softmax(stage["alpha_logits"], 0)[0].item()
    assert b.alpha == pytest.approx(alpha, abs=1e-6)
    assert "alpha refitted on" in (out / "train.log").read_text()


def test_resume_keeps_the_finished_stage(heads_run):
    from agilenn.models.bundle import load_bundle
    from agilenn.training.cli import main

    _, out, args = heads_run
    before = load_bundle(out / "bundle").alpha
    assert main([*args, "--resume"]) == 0
    assert "remote heads: resumed finished stage (2 heads" in (out / "train.log").read_text()
    assert load_bundle(out / "bundle").alpha == before
    # asking for fewer heads than were trained averages the first ones, with alpha refitted to them
    assert main([*args, "--resume", "--remote-heads", "1", "--train-only"]) == 0
    st = torch.load(out / "ckpt" / "remote_heads.pt", weights_only=False)
    assert len(st["heads"]) == 2 and st["alpha_heads"] == 1
    assert (out / "train.log").read_text().count("alpha refitted on") == 2


def test_a_run_cut_off_inside_a_head_resumes_at_its_next_epoch(tmp_path, monkeypatch):
    from agilenn.training import remote_heads
    from agilenn.training.cli import main

    from training_test_helpers import TINY_RUN, write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "data", n_train=300, n_test=40)
    # stage by stage: --epochs would set --remote-epochs too
    args = ["--data-dir", str(data), "--out", str(tmp_path / "run"), *TINY_RUN, "--ref-epochs", "1",
            "--extractor-epochs", "1", "--joint-epochs", "1", "--remote-heads", "1", "--remote-epochs", "2",
            "--train-only"]
    measured = remote_heads._accuracies
    calls = []

    def cut_in_epoch_two(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("cut off")
        return measured(*a, **kw)

    monkeypatch.setattr(remote_heads, "_accuracies", cut_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    st = torch.load(tmp_path / "run" / "ckpt" / "remote_heads.pt", weights_only=False)
    assert st["heads"] == [] and st["current"]["epoch"] == 1
    monkeypatch.setattr(remote_heads, "_accuracies", measured)
    assert main([*args, "--resume"]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "remote head 1: resuming at epoch 2" in log and "remote head 1 epoch 2/2" in log
    st = torch.load(tmp_path / "run" / "ckpt" / "remote_heads.pt", weights_only=False)
    assert len(st["heads"]) == 1 and st["alpha_logits"] is not None


def test_the_flags_are_checked_and_recorded(tmp_path):
    from agilenn.training.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--remote-heads", "3", "--remote-epochs", "7",
                                                      "--remote-lr", "0.05"]))
    assert (cfg.remote_heads, cfg.remote_epochs, cfg.remote_lr) == (3, 7, 0.05)
    assert config_from_args(build_parser().parse_args([])).remote_heads == 0
    for bad in (["--remote-heads", "-1"], ["--remote-heads", "two"], ["--remote-epochs", "-3"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
