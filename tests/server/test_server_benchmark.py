"""The load benchmark runs (tiny: one point per config, a fraction of a second; no timing checks)."""

from __future__ import annotations

import json

from agilenn.benchmarks.server_load import main


def test_server_load_benchmark_smoke(bundle_dir, tmp_path, capsys):
    out = tmp_path / "load.json"
    assert main(["--model-dir", str(bundle_dir), "--streams", "4", "--duration", "0.3", "--warmup", "0.1",
                 "--out", str(out), "--markdown"]) == 0
    report = json.loads(out.read_text())
    assert [(r["config"], r["streams"]) for r in report["results"]] == [("batching", 4), ("no-batching", 4)]
    for r in report["results"]:
        assert r["errors"] == 0 and r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
    assert "| batching | 1 | 4 |" in capsys.readouterr().out


def test_soak_benchmark_smoke(bundle_dir, tmp_path):
    from agilenn.benchmarks.cli import main as bench

    out = tmp_path / "soak.json"
    assert bench(["soak", "--model-dir", str(bundle_dir), "--requests", "800", "--streams", "8", "--unary", "40",
                  "--pool", "200", "--flood-seconds", "0.5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    soak, flood = report["soak"], report["flood"]
    assert soak["stream_end_status"] == {"OK": 8} and soak["not_as_expected"] == {}
    assert soak["counts"]["stream unanswered"] == 0 and soak["counts"]["stream OK"] > 0
    assert sum(v for k, v in soak["counts"].items() if k.startswith("unary ")) == 40
    assert soak["rss"]["before_mib"] > 0 and soak["valid_p99_ms"] > 0
    assert flood["answered"] == flood["written"] > 0
    assert report["server_log_tracebacks"] == 0


def test_server_load_benchmark_compares_worker_counts_in_one_run(bundle_dir, tmp_path):
    out = tmp_path / "load.json"
    assert main(["--model-dir", str(bundle_dir), "--streams", "8", "--duration", "0.3", "--warmup", "0.1",
                 "--configs", "batching", "--workers", "1,2", "--streams-per-connection", "2",
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["workers"], r["streams"]) for r in results] == [(1, 8), (2, 8)]
    for r in results:
        assert r["errors"] == 0 and r["requests"] > 0 and r["server_cpu_us_per_inference"] > 0
