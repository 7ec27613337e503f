"""The commands: agilenn-agent, agilenn-mcu-sim (+ agent over a pty), agilenn-demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from agilenn.device_agent import demo

SUMMARY_KEYS = {"n", "accuracy", "local_only_accuracy", "degraded", "payload_bytes_mean", "latency_ms_p50",
                "latency_ms_p99"}


def _agent(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "agilenn.device_agent.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_agent_replays_a_dataset_with_json_summary(server, synthetic_bundle, fashion_test):
    out = _agent("--bundle", synthetic_bundle, "--server", server.address, "--dataset", "fashion-mnist",
                 "--limit", 25, "--json", "--mcu", "stm32f746@216MHz", "--max-payload-bytes", 60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    per_input, summary = lines[:-1], lines[-1]
    assert len(per_input) == 25 and summary["summary"] and summary["n"] == 25
    assert SUMMARY_KEYS <= set(summary)
    assert summary["degraded"] == 0 and summary["mcu"] == "stm32f746@216MHz"
    assert summary["accuracy"] == sum(p["correct"] for p in per_input) / 25
    assert all(p["payload_bytes"] <= 60 and p["channels_sent"] <= p["channels_total"] for p in per_input)
    assert all(p["timings"]["mcu_compute_ms"] > 0 for p in per_input)
    assert [p["label"] for p in per_input] == fashion_test.labels[:25].tolist()


def test_agent_answers_locally_when_no_server_listens(synthetic_bundle):
    out = _agent("--bundle", synthetic_bundle, "--server", "127.0.0.1:1", "--connect-wait-s", 0.5,
                 "--dataset", "fashion-mnist", "--limit", 5, "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    [summary] = [json.loads(line) for line in out.stdout.splitlines()]
    assert summary["n"] == 5 and summary["degraded"] == 5
    assert summary["accuracy"] == summary["local_only_accuracy"]
    assert summary["payload_bytes_mean"] is None


def test_agent_classifies_image_files(tmp_path, synthetic_bundle, fashion_test):
    from PIL import Image

    for i in range(3):
        Image.fromarray(fashion_test.images[i, :, :, 0]).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    out = _agent("--bundle", synthetic_bundle, "--local-only", "--images", tmp_path, "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line.get("id", "").rsplit("/", 1)[-1] for line in lines[:-1]] == ["0.png", "1.png", "2.png", "bad.png"]
    assert "error" in lines[3] and lines[-1]["n"] == 3 and lines[-1]["errors"] == 1


@pytest.mark.parametrize("request_kind", ["IMAGE", "FEATURES"])
def test_mcu_sim_and_agent_over_a_pty(server, synthetic_bundle, request_kind):
    features = ["--features", "--bundle", str(synthetic_bundle)] if request_kind == "FEATURES" else []
    sim = subprocess.Popen([sys.executable, "-m", "agilenn.device_agent.mcu_sim", "--pty", "--limit", "30",
                            "--noise", "0.3", "--json", *features], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        path = None
        end = time.monotonic() + 60
        while path is None and time.monotonic() < end:
            line = sim.stderr.readline()
            m = re.search(r"waiting on (\S+):", line)
            path = m and m.group(1)
        assert path, "the simulator did not print its pty"
        agent = _agent("--bundle", synthetic_bundle, "--server", server.address, "--port", path, "--limit", 30,
                       "--json")
        sim_out, sim_err = sim.communicate(timeout=60)
    finally:
        sim.kill()
    assert agent.returncode == 0, agent.stderr
    assert sim.returncode == 0, sim_err
    report = json.loads(sim_out)
    assert report["ok"] and report["answered"] == 30 and report["degraded"] == 0
    assert report["request"] == request_kind
    summary = json.loads(agent.stdout.splitlines()[-1])
    assert summary["n"] == 30 and summary["degraded"] == 0


def test_demo_prints_the_summary(synthetic_bundle, capsys):
    assert demo.main(["--model-dir", str(synthetic_bundle), "--limit", "40", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert SUMMARY_KEYS <= set(summary) and summary["n"] == 40 and summary["degraded"] == 0


@pytest.mark.parametrize("bad", [["--mcu", "z80@4MHz"], ["--max-payload-bytes", "2"]])  # 2: below the 3-byte header
def test_agent_rejects_bad_options(bad, synthetic_bundle):
    out = _agent("--bundle", synthetic_bundle, "--dataset", "fashion-mnist", *bad)
    assert out.returncode == 2 and "error" in out.stderr
