"""The XAI ablation (training/ablation.py) end to end on a tiny real Fashion-MNIST run: every variant
starts its joint stage from the base run's very checkpoints, the table has every column, a second
call skips finished variants, and a reused run goes into the table without retraining."""
from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")
# the first test builds a base run and three variants (about 2 min on 2 idle cores, 15 on a machine
# busy with a training): room for a busy machine
pytestmark = pytest.mark.timeout(1500)

TINY = ["--dataset", "fashion-mnist", "--train-subset", "384", "--test-subset", "128", "--epochs", "1",
        "--preselect-samples", "128", "--channels", "10", "--body-width", "16", "--batch-size", "64", "--threads", "2"]
VARIANTS = "plain,ig3,saliency"  # ig2 comes from the base run itself (--reuse); ig3 stands for m-step IG


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    from agilenn.datasets import DatasetNotFoundError, load_dataset
    from agilenn.training.cli import main

    try:
        load_dataset("fashion-mnist", "test")
    except DatasetNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")
    out = tmp_path_factory.mktemp("ablation") / "base"
    assert main([*TINY, "--out", str(out)]) == 0  # a 2-point-IG AgileNN run (the defaults)
    return out


@pytest.fixture(scope="module")
def ablation(base_run):
    from agilenn.training.ablation import main

    out = base_run.parent / "abl"
    args = ["--run", str(base_run), "--out", str(out), "--variants", VARIANTS, "--reuse", f"ig2={base_run}",
            "--fast-export", "--joint-epochs", "1", "--audit-samples", "64"]
    assert main(args) == 0
    return out, args


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_every_variant_starts_from_the_base_runs_extractor(base_run, ablation):
    out, _ = ablation
    base_ext, base_perm = _state(base_run / "ckpt" / "extractor.pt")["extractor"], _state(base_run / "ckpt" / "preselect.pt")["perm"]
    for name in ("plain", "ig3", "saliency", "ig2"):
        ckpt = out / name / "ckpt"
        for stage in ("reference", "extractor", "preselect"):
            assert (ckpt / f"{stage}.pt").read_bytes() == (base_run / "ckpt" / f"{stage}.pt").read_bytes(), (name, stage)
        ext = _state(ckpt / "extractor.pt")["extractor"]
        assert ext.keys() == base_ext.keys()
        assert all(torch.equal(ext[key], base_ext[key]) for key in ext)
        assert torch.equal(_state(ckpt / "preselect.pt")["perm"], base_perm)
        assert _state(ckpt / "joint.pt")["done"]
    # the joint stage starts from the same weights and the same random state in every variant trained here
    starts = [json.loads((out / n / "result.json").read_text())["joint_start"] for n in ("plain", "ig3", "saliency")]
    assert starts[0] == starts[1] == starts[2]
    # only the losses differ between the variants trained here
    cfgs = {n: json.loads((out / n / "config.json").read_text()) for n in ("plain", "ig3", "saliency")}
    assert (cfgs["plain"]["lam"], cfgs["ig3"]["lam"], cfgs["saliency"]["lam"]) == (1.0, 0.8, 0.8)
    assert (cfgs["ig3"]["xai"], cfgs["ig3"]["ig_steps"], cfgs["saliency"]["xai"]) == ("ig", 3, "saliency")
    strip = lambda c: {k: v for k, v in c.items() if k not in ("lam", "xai", "ig_steps", "out", "model_name")}  # noqa: E731
    assert strip(cfgs["plain"]) == strip(cfgs["ig3"]) == strip(cfgs["saliency"])
    assert strip(cfgs["plain"]) == strip(json.loads((base_run / "config.json").read_text()))  # same epochs as the base


def test_table_has_every_column_and_row(ablation):
    from agilenn.training.ablation import COLUMNS

    out, _ = ablation
    text = (out / "ablation.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| variant |"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(COLUMNS)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) >= {"initial extractor (stage 2 + preselection)", "plain", "ig3", "saliency", "ig2 †"}
    for name in ("plain", "ig3", "saliency", "ig2 †"):
        assert rows[name].count("|") == len(COLUMNS) + 1 and "(rans)" in rows[name]
    assert "(IG 3-step)" in rows["ig3"] and "(saliency)" in rows["saliency"] and "none (λ = 1)" in rows["plain"]
    assert "128 test images" in text and "on 64 test images" in text and "--fast-export" in text
    summary = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in summary["variants"]] == ["plain", "ig3", "saliency", "ig2"]
    for r in summary["variants"]:
        f = r["faithful"]
        assert f["ig_steps"] >= 16 and f["completeness_relative"] >= 0 and 0 <= f["skewness_mean"] <= 1
        assert r["audit_images"] == 64 and r["accuracy"]["test_images"] == 128
        assert r["payload"]["coder"] == "rans" and r["payload"]["bytes_mean"] > 13
        assert r["joint_wall_s"] > 0 and r["joint_wall_source"] == "joint checkpoint"
        assert set(r["accuracy"]) >= {"combined", "local", "remote", "reference"}
    assert summary["variants"][-1]["source"] != "trained here"
    assert summary["initial"]["faithful"]["samples"] == 64
    # the reused run is the base run: its row reproduces what that run's own bundle measured
    base_metrics = json.loads((out.parent / "base" / "bundle" / "manifest.json").read_text())["metrics"]
    assert summary["variants"][-1]["accuracy"]["combined"] == base_metrics["combined_accuracy"]


def test_second_call_skips_finished_variants(ablation):
    from agilenn.training.ablation import main

    out, args = ablation
    before = {n: (out / n / "result.json").stat().st_mtime_ns for n in ("plain", "ig3", "saliency", "ig2")}
    (out / "ig3" / "result.json").unlink()  # as if cut off after training, before the measurement
    assert main(args) == 0
    log = (out / "ablation.log").read_text().split("ablation table written")[-2]  # the second call's lines
    for name in ("plain", "saliency", "ig2"):
        assert f"variant {name}: finished earlier, skipped" in log
        assert (out / name / "result.json").stat().st_mtime_ns == before[name]
    assert "variant ig3: training" in log and "joint: resumed finished stage" in log
    assert (out / "ig3" / "result.json").is_file()


def test_changed_settings_are_refused(ablation, capsys):
    from agilenn.training.ablation import main

    out, args = ablation
    i = args.index("--joint-epochs")
    assert main([*args[:i], "--joint-epochs", "2", *args[i + 2:]]) == 2
    assert re.search(r"started with other settings \(joint_epochs differ\)", capsys.readouterr().err)


def test_full_export_reports_the_deployed_coder(base_run):
    """Without --fast-export the bundle gets its integer part and rans-ctx tables; bytes are those."""
    from agilenn.training.ablation import run_ablation

    summary = run_ablation(base_run, base_run.parent / "abl-full", [], reuse={"agilenn": base_run}, audit_samples=32)
    (row,) = summary["variants"]
    assert row["payload"]["coder"] == "rans-ctx" and "int8" in row["payload"]["numerics"]
    assert row["payload"]["bytes_mean"] == json.loads((base_run / "bundle" / "manifest.json").read_text())[
        "metrics"]["rans_ctx"]["bytes_mean"]
    assert "int8" in row["accuracy"]


def test_unusable_base_runs_are_named(tmp_path, base_run, capsys):
    import shutil

    from agilenn.training.ablation import main

    partial = tmp_path / "partial"
    shutil.copytree(base_run, partial, ignore=shutil.ignore_patterns("bundle", "preselect.pt"))
    assert main(["--run", str(partial), "--out", str(tmp_path / "a")]) == 2
    assert "ckpt/preselect.pt is missing (stage preselect has not run yet)" in capsys.readouterr().err
    # a path that is no run directory is named before anything is written beside it
    assert main(["--run", str(tmp_path / "typo")]) == 2
    assert "not a run directory" in capsys.readouterr().err and not (tmp_path / "typo-ablation").exists()
    assert main(["--run", str(base_run), "--out", str(base_run / "abl")]) == 2
    assert "lies inside the base run" in capsys.readouterr().err
    assert main(["--run", str(base_run), "--out", str(tmp_path / "b"), "--variants", "ig1"]) == 2
    assert "unknown variant 'ig1'" in capsys.readouterr().err


def test_wall_time_of_older_runs_comes_from_their_log(tmp_path):
    from agilenn.training.ablation import joint_wall_time

    (tmp_path / "ckpt").mkdir()
    torch.save({"done": True, "epoch": 2}, tmp_path / "ckpt" / "joint.pt")  # written before wall_s existed
    (tmp_path / "train.log").write_text(
        "10:00:00 joint epoch 1/2  loss 1.0 | alpha 0.5 centroids [0.0, 1.0] (100s)\n"
        "10:01:00 joint epoch 1/2  loss 0.9 | alpha 0.5 centroids [0.0, 1.0] (90s)\n"  # epoch 1 rerun after a restart
        "10:02:00 joint epoch 2/2  loss 0.8 | alpha 0.5 centroids [0.0, 1.0] (80s)\n")
    assert joint_wall_time(tmp_path, None) == (170.0, f"{tmp_path / 'train.log'} (sum of the per-epoch lines)")
    (tmp_path / "train.log").write_text("10:00:00 joint epoch 1/2  loss 1.0 (100s)\n")  # incomplete: no guess
    assert joint_wall_time(tmp_path, None) == (None, "not recorded")


def test_a_setting_added_later_is_its_default_for_older_runs():
    """A variant directory written before a setting existed (its config.json lacks the key) compares
    equal to today's config at that setting's default, so resuming it is not refused."""
    from agilenn.training.ablation import _comparable
    from agilenn.training.trainer import TrainConfig

    now = TrainConfig()
    older = json.loads(json.dumps(now.to_dict()))
    for key in ("remote_heads", "remote_epochs", "remote_lr"):
        del older[key]
    assert _comparable(older) == _comparable(now)
    assert _comparable({**older, "remote_heads": 2}) != _comparable(now)
