"""agilenn-train under torchrun: two CPU processes (gloo) train a tiny run into the same bundle
format one process writes, and the sharded XAI preselection sees exactly the rows one process sees.
Real processes, a real process group on loopback (torchrun --standalone)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# Each rank: the same seeded extractor and evaluator, its chunk of the samples, gathered back.
_PRESELECT_WORKER = textwrap.dedent("""
    import sys, torch
    from agilenn.training import distributed
    from agilenn.training.nets import ArchConfig, Body, Stem
    from agilenn.training.preselect import channel_order, measure_channel_importance

    d, _ = distributed.init("cpu")
    torch.manual_seed(0)
    arch = ArchConfig(channels=10, k=2, body_width=16)
    extractor, evaluator = Stem(arch).eval(), Body(arch.channels, arch).eval()
    x = torch.randn(37, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # 37: unequal chunks
    y = torch.randint(0, 10, (37,), generator=torch.Generator().manual_seed(2))
    part = distributed.shard(len(y), d)
    ci = distributed.gather_rows(measure_channel_importance(evaluator, extractor, x[part], y[part], "ig", 0,
                                                            batch_size=7), d)
    if d.main:
        torch.save({"ci": ci, "perm": channel_order(ci, arch.k, "topk_appearance"),
                    "extractor": extractor.state_dict(), "evaluator": evaluator.state_dict(), "x": x, "y": y},
                   sys.argv[1])
    distributed.finish(d)
""")


def test_sharded_preselection_gathers_exactly_the_single_process_rows(tmp_path):
    from agilenn.training.nets import ArchConfig, Body, Stem
    from agilenn.training.preselect import channel_order, measure_channel_importance

    script, result = tmp_path / "worker.py", tmp_path / "ranks.pt"
    script.write_text(_PRESELECT_WORKER)
    out = subprocess.run(TORCHRUN + [str(script), str(result)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    got = torch.load(result, weights_only=False)
    arch = ArchConfig(channels=10, k=2, body_width=16)
    extractor, evaluator = Stem(arch).eval(), Body(arch.channels, arch).eval()
    extractor.load_state_dict(got["extractor"])
    evaluator.load_state_dict(got["evaluator"])
    ci = measure_channel_importance(evaluator, extractor, got["x"], got["y"], "ig", 0, batch_size=7)
    assert got["ci"].shape == ci.shape == (37, 10)
    torch.testing.assert_close(got["ci"], ci, rtol=1e-5, atol=1e-7)
    assert torch.equal(got["perm"], channel_order(ci, arch.k, "topk_appearance"))


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_two_cpu_processes_train_a_bundle(tmp_path):
    from training_test_helpers import write_fashion_mnist  # not `conftest`: tests/agent has one too

    from agilenn.models.bundle import load_bundle
    from agilenn.models.model_repository import DEFAULT_REPOSITORY

    data = write_fashion_mnist(tmp_path / "data", n_train=300, n_test=100)
    out = tmp_path / "run"
    args = ["--data-dir", str(data), "--out", str(out), "--epochs", "1", "--preselect-samples", "101",
            "--batch-size", "64", "--threads", "1", "--channels", "10", "--body-width", "16"]
    run = subprocess.run(TORCHRUN + ["-m", "agilenn.training.cli", *args], capture_output=True, text=True,
                         timeout=540)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.split() == [str(out / "bundle")]  # rank 0 alone prints the bundle
    log = (out / "train.log").read_text()
    assert "data parallel: 2 processes (gloo), global batch 64" in log

    bundle = load_bundle(out / "bundle")  # validates the contract (manifest, ONNX files, codec tables)
    assert bundle.name == "agilenn-fashion-mnist"
    shipped = json.loads(next(DEFAULT_REPOSITORY.glob("agilenn-fashion-mnist/*/manifest.json")).read_text())
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    # Same format as the single-process bundle shipped in the repository: every field it has
    # (`pruned` only where export found dead remote channels: the shipped bundle had four).
    expected = _keys(shipped) if "pruned" in manifest else {k for k in _keys(shipped) if k.split(".")[0] != "pruned"}
    assert expected - _keys(manifest) == set()
    assert torch.load(out / "ckpt" / "joint.pt", weights_only=False)["done"]
