"""The coder benchmark prints its table on a bundle (speed targets live in the benchmark, not here)."""

import json

from agilenn.benchmarks import codec_bench
from agilenn.models.synthetic import make_random_bundle


def test_codec_bench_prints_the_coder_table(tmp_path, capsys):
    bundle = make_random_bundle(tmp_path / "b")
    codec_bench.main(["--bundle", str(bundle), "--limit", "40", "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert "order-0 entropy floor" in out
    for coder in ("ans", "rans", "zstd", "raw"):
        assert f"| {coder} |" in out
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["samples"] == 40
    assert table["coders"]["raw"]["bytes_mean"] == 3 + (6 * 49 * 2 + 7) // 8  # compact header + 2-bit packing
