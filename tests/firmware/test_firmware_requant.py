"""The kernels' per-layer requantization (precomputed table, 2M - 2^32 form, SSAT clamp) against the
direct reference formula agn_requant_s32 on random and extreme accumulators, multipliers and shifts,
under AddressSanitizer and UBSan (tests/firmware/requant_check.c says how)."""

import subprocess
from pathlib import Path

import pytest
from agn_c_helpers import CFLAGS, CSRC, compile_c

HERE = Path(__file__).resolve().parent
SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    out = tmp_path_factory.mktemp("rq") / "requant_check"
    compile_c([*CFLAGS, *SANITIZE, f"-I{CSRC}", "-o", str(out), str(HERE / "requant_check.c"),
               str(CSRC / "agn_kernels.c")], out.parent)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_layer_requantization_equals_the_reference_formula(checker, seed):
    result = subprocess.run([str(checker), "20000", str(seed)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["ok", str(20000 * 16)]
