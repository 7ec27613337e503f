"""Helpers and fixtures of the generated-library tests (a uniquely named module rather than a
conftest.py: tests/training imports `from conftest import ...`, which a second conftest breaks).
Test modules import the fixtures by name."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import agilenn.models
import numpy as np
import pytest

HERE = Path(__file__).parent
DRIVER = HERE / "driver.c"
HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]


def shipped_bundle_dir() -> Path:
    return Path(agilenn.models.__file__).parent / "repository" / "agilenn-fashion-mnist" / "1"


def compile_c(sources, out: Path, flags=(), cc: str = "gcc") -> Path:
    """Compile and link; a failure shows the compiler's message."""
    res = subprocess.run([cc, *HOST_FLAGS, *flags, *map(str, sources), "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, f"{cc} failed:\n{res.stderr}"
    return out


@pytest.fixture(scope="session", name="generated")
def generated_fixture(tmp_path_factory):
    """agilenn-firmware generate on the shipped bundle, as a user runs it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("lib")
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(shipped_bundle_dir()), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="session", name="driver")
def driver_fixture(generated, tmp_path_factory):
    """The host CLI (driver.c) linked against the generated library, built with -Werror."""
    exe = tmp_path_factory.mktemp("bin") / "driver"
    return compile_c([*sorted(generated.glob("*.c")), DRIVER], exe, ["-I", str(generated)])


def assert_driver_infer_matches(driver: Path, bundle, images: np.ndarray, reference) -> None:
    """The driver's `infer` (int16 logits, then the channel-major centroid indices, per image) equals
    the Python integer reference's, image for image; the message names the first image that differs."""
    out = subprocess.run([str(driver), "infer"], input=images.tobytes(), capture_output=True, check=True,
                         timeout=120).stdout
    classes, per_image = bundle.num_classes, int(np.prod(bundle.remote_feature_shape))
    rec = np.frombuffer(out, np.uint8).reshape(len(images), 2 * classes + per_image)
    logits = rec[:, :2 * classes].copy().view(np.int16)
    indices = rec[:, 2 * classes:].reshape(len(images), *bundle.remote_feature_shape)
    differ = (logits != reference.logits).any(1) | (indices != reference.indices).reshape(len(images), -1).any(1)
    bad = np.flatnonzero(differ)
    assert bad.size == 0, f"{bad.size} images differ, first {bad[0]}"
