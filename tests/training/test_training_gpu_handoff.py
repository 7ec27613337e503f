"""Training on a rented GPU, exporting elsewhere (deploy/gpu/, docs/training.md "Training on a rented GPU"):
--train-only stops at checkpoints, a later --resume exports them, checkpoints that lost their
optimizer state on the way back still resume, and the two carry helpers do what they say."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")
# a tiny run trains twice and exports once (about 1 min on 2 idle cores; much longer beside a training)
pytestmark = pytest.mark.timeout(1200)

REPO = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "deploy" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from training_test_helpers import write_fashion_mnist

    root = tmp_path_factory.mktemp("handoff")
    data = write_fashion_mnist(root / "data", n_train=256, n_test=64)
    args = ["--data-dir", str(data), "--preselect-samples", "64", "--batch-size", "64", "--threads", "2",
            "--channels", "10", "--body-width", "16", "--extractor-epochs", "1"]
    return root, args


def _unfinish(path: Path, epoch: int) -> None:
    """What a run cut off after ``epoch`` epochs leaves once gpu_runs.slim dropped its optimizer."""
    st = torch.load(path, map_location="cpu", weights_only=False)
    st.update(done=False, epoch=epoch)
    for key in ("opt", "sched"):
        st.pop(key, None)
    torch.save(st, path)


def test_train_only_then_resume_exports(tiny):
    from agilenn.training.cli import main

    root, args = tiny
    out = root / "run"
    stages = [*args, "--out", str(out), "--ref-epochs", "2", "--joint-epochs", "2"]
    assert main([*stages, "--train-only"]) == 0
    ckpt = out / "ckpt"
    assert {p.name for p in ckpt.glob("*.pt")} == {"reference.pt", "extractor.pt", "preselect.pt", "joint.pt"}
    assert not (out / "bundle").exists(), "--train-only must not export"

    # cut off after epoch 1 of each trained stage, optimizer state lost on the way back: both resume
    _unfinish(ckpt / "reference.pt", 1)
    ref_before = torch.load(ckpt / "reference.pt", weights_only=False)["model"]
    _unfinish(ckpt / "joint.pt", 1)
    (ckpt / "extractor.pt").unlink()  # stages after an unfinished one are redone
    (ckpt / "preselect.pt").unlink()
    assert main([*stages, "--train-only", "--resume"]) == 0
    log = (out / "train.log").read_text()  # the CLI's own log (it replaces the root logger's handlers)
    assert "reference: checkpoint has no optimizer state; resuming at epoch 2" in log
    assert "joint: checkpoint has no optimizer state; resuming at epoch 2" in log
    ref_after = torch.load(ckpt / "reference.pt", weights_only=False)
    assert ref_after["done"] and ref_after["epoch"] == 2
    assert any(not torch.equal(ref_before[k], ref_after["model"][k]) for k in ref_before), "epoch 2 trained"
    joint = torch.load(ckpt / "joint.pt", weights_only=False)
    assert joint["done"] and joint["epoch"] == 2

    # the export, anywhere, from the checkpoints alone
    assert main([*stages, "--resume"]) == 0
    assert (out / "bundle" / "manifest.json").is_file() and (out / "bundle" / "remote.onnx").is_file()


def test_pack_unpack_is_byte_exact_and_checks_hashes(tmp_path):
    pack = _script("pack_imagefolder")
    src = tmp_path / "tree"
    files = {"train/cat/0001.jpg": b"\xff\xd8jpeg", "train/dog/a b.png": b"\x89PNG" * 100, "test/cat/x.jpg": b""}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    blob = tmp_path / "tree.npz"
    assert pack.pack(src, blob) == 3
    assert pack.unpack(blob, tmp_path / "copy") == 3
    assert {rel: (tmp_path / "copy" / rel).read_bytes() for rel in files} == files

    with np.load(blob) as z:  # one flipped byte in the data
        arrays = {k: z[k].copy() for k in z.files}
    arrays["data"][3] ^= 0xFF
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SystemExit, match="train/cat/0001.jpg: bytes differ"):
        pack.unpack(tmp_path / "bad.npz", tmp_path / "copy2")


def _log(path: Path, lines: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.log").write_text("".join(f"00:00:00 {line}\n" for line in lines))


def test_plan_scales_probe_epochs_to_the_budget(tmp_path):
    runs = _script("gpu_runs")
    _log(tmp_path / "stages", ["reference epoch 1/1  loss 2.0  test_acc 0.3  (2.0s)",
                               "extractor epoch 1/1  loss 1.0  evaluator_acc_on_extractor 0.3  (0.5s)"])
    for name, sec in (("main", 4.0), ("plain", 3.0), ("saliency", 4.0), ("ig8", 10.0)):
        _log(tmp_path / name, [f"joint epoch 1/1  loss 1.0 | test: combined 0.5 (x) ({sec}s)"])
    # probe on 10 k of 50 k images: reference 10 s, joint main 20 s, ig8 50 s per full epoch
    plan = runs.plan(1000.0, tmp_path, 10_000, 50_000, startup_s=10.0)
    usable = 1000 - 2 * 10 - 2.5 - 15
    assert plan["REF_EPOCHS"] == int(0.5 * usable // 10)
    joint_budget = usable - plan["REF_EPOCHS"] * 10
    assert plan["JOINT_EPOCHS"] == int(joint_budget // 20)
    assert plan["IG8_EPOCHS"] == int(joint_budget // 50) < plan["JOINT_EPOCHS"]
    # weight averaging after the one-cycle schedule comes out of the reference's half
    swa = runs.plan(1000.0, tmp_path, 10_000, 50_000, startup_s=10.0, extra_ref_epochs=6)  # 5 averaged + BN pass
    assert swa["REF_EPOCHS"] == plan["REF_EPOCHS"] - 6 and swa["JOINT_EPOCHS"] == plan["JOINT_EPOCHS"]
    with pytest.raises(SystemExit, match="no 'joint epoch' line"):
        (tmp_path / "ig8" / "train.log").write_text("nothing\n")
        runs.plan(1000.0, tmp_path, 10_000, 50_000, startup_s=10.0)


def test_collect_splits_and_drops_optimizer_state_only_when_too_big(tmp_path, monkeypatch):
    import io
    import tarfile

    runs = _script("gpu_runs")
    first, second = tmp_path / "main", tmp_path / "plain"
    for d in (first, second):
        (d / "ckpt").mkdir(parents=True)
        torch.save({"model": {"w": torch.zeros(1000)}, "opt": {"m": torch.ones(30_000)}, "epoch": 3, "done": False},
                   d / "ckpt" / "joint.pt")
        torch.save({"model": {"w": torch.zeros(10)}, "done": True}, d / "ckpt" / "reference.pt")
        (d / "train.log").write_text("log\n")

    def names_and_states(out: Path) -> dict:
        blob = b"".join(p.read_bytes() for p in sorted(out.glob("runs.tar.part*")))
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}

    monkeypatch.setattr(runs, "SPLIT_BYTES", 50_000)
    runs.collect(tmp_path / "out", [first, second])
    got = names_and_states(tmp_path / "out")
    # the second run's copy of the first run's stage checkpoints stays behind
    assert set(got) == {"main/ckpt/joint.pt", "main/ckpt/reference.pt", "main/train.log", "plain/ckpt/joint.pt",
                        "plain/train.log"}
    assert len(list((tmp_path / "out").glob("runs.tar.part*"))) > 1
    assert "opt" in torch.load(io.BytesIO(got["main/ckpt/joint.pt"]), weights_only=False)

    monkeypatch.setattr(runs, "MAX_TOTAL", 100_000)  # now too big: optimizer state goes
    runs.collect(tmp_path / "out2", [first, second])
    st = torch.load(io.BytesIO(names_and_states(tmp_path / "out2")["main/ckpt/joint.pt"]), weights_only=False)
    assert "opt" not in st and st["epoch"] == 3 and torch.equal(st["model"]["w"], torch.zeros(1000))
