"""A user's own photos: agilenn-train --dataset imagefolder:PATH trains on any-size RGB files, and
agilenn-agent --dataset imagefolder:PATH replays them through the bundle it made."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tqdm")


def _photos(root, n_train=24, n_test=6, classes=("cat", "dog", "owl")):
    """Class-dependent colour blobs as JPEGs of two different sizes (the loader resizes)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                size = (20, 20) if i % 2 == 0 else (26, 22)
                img = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
    return root


def test_train_and_replay_an_image_folder(tmp_path):
    from agilenn.models.bundle import load_bundle
    from agilenn.training.cli import main

    photos = _photos(tmp_path / "my-photos")
    out = tmp_path / "run"
    assert main(["--dataset", f"imagefolder:{photos}", "--out", str(out), "--epochs", "1", "--preselect-samples", "20",
                 "--batch-size", "16", "--threads", "2", "--channels", "8", "--k", "2", "--body-width", "8",
                 "--local-width", "8"]) == 0
    bundle = load_bundle(out / "bundle")
    assert bundle.name == "agilenn-my-photos"
    assert bundle.input_shape == (3, 20, 20) and bundle.classes == ["cat", "dog", "owl"]
    assert bundle.manifest["dataset"] == f"imagefolder:{photos}"

    run = subprocess.run([sys.executable, "-m", "agilenn.device_agent.cli", "--bundle", str(out / "bundle"),
                          "--local-only", "--dataset", f"imagefolder:{photos}", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[-1]["n"] == 18 and lines[-1]["errors"] == 0
    assert [line["label"] for line in lines[:-1]] == [0] * 6 + [1] * 6 + [2] * 6
