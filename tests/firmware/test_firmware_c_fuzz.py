"""Bounded random fuzz of the C coder and framing under AddressSanitizer and UBSan
(tests/firmware/fuzz_coder_frame.c says what it checks)."""

import subprocess
from pathlib import Path

import pytest
from agn_c_helpers import CFLAGS, CSRC, compile_c

HERE = Path(__file__).resolve().parent
SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "fuzz_coder_frame"
    sources = [str(HERE / "fuzz_coder_frame.c")] + [str(CSRC / s) for s in ("agn_common.c", "agn_rans.c", "agn_frame.c")]
    compile_c([*CFLAGS, *SANITIZE, f"-I{CSRC}", "-o", str(out), *sources], out.parent)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_under_sanitizers(fuzzer, seed):
    result = subprocess.run([str(fuzzer), "8000", str(seed)], capture_output=True, text=True, timeout=240,
                            env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok ") and "rans=8000" in result.stdout
    # the fuzz reached the interesting paths: hostile inputs that happen to be valid, both kinds
    counts = dict(item.split("=") for item in result.stdout.split()[1:])
    assert int(counts["rans_hostile_accepted"]) > 0 and int(counts["hostile_chunks_ok"]) > 0
