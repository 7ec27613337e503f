"""Helpers and fixtures of the generated-library tests (a uniquely named module rather than a
conftest.py: tests/training imports `from conftest import ...`, which a second conftest breaks).
Test modules import the fixtures by name."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import agilenn.models
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
