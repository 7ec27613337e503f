"""Fixtures for the C library tests: the shipped bundle's generated library, built with the system gcc."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from fw_lib_helpers import DRIVER, compile_c, shipped_bundle_dir


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """agilenn-firmware generate on the shipped bundle, as a user runs it."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("lib")
    res = subprocess.run(["agilenn-firmware", "generate", "--bundle", str(shipped_bundle_dir()), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="session")
def driver(generated, tmp_path_factory):
    """The host CLI (driver.c) linked against the generated library, built with -Werror."""
    exe = tmp_path_factory.mktemp("bin") / "driver"
    return compile_c([*sorted(generated.glob("*.c")), DRIVER], exe, ["-I", str(generated)])
