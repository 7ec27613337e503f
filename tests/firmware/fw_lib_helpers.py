"""Helpers of the generated-library tests (a uniquely named module: `from conftest import ...`
breaks when another test folder has a conftest.py too)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import agilenn.models

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
