"""A tiny `agilenn-bench latency` run on synthetic bundles: real server, real relay, real agent.

Checks the results' shape (what scripts comparing runs rely on), not any speed.
"""

import json

import pytest

from agilenn.benchmarks.cli import main
from agilenn.benchmarks.report import ROW_FIELDS

SCHEMES = {"agilenn-ans", "agilenn-zstd", "agilenn-budget", "plain-split", "edge-png", "edge-jpeg90", "edge-jpeg75",
           "local-only"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    argv = ["latency", "--quick", "--synthetic", "--images", "6", "--link", "fast:20000:1",
            "--link", "slow:500:2:1:1", "--mhz", "64,216", "--shaper", "userspace", "--goodput-seconds", "0.2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out, json.loads((out / "latency-quick.json").read_text())


def test_one_row_per_scheme_link_and_clock(run):
    _, doc = run
    keys = [(r["scheme"], r["link"], r["mcu_mhz"]) for r in doc["rows"]]
    assert len(keys) == len(set(keys))
    expected = {(s, link, mhz) for s in SCHEMES - {"local-only"} for link in ("fast", "slow") for mhz in (64, 216)}
    expected |= {("local-only", "none", mhz) for mhz in (64, 216)}
    assert set(keys) == expected


def test_rows_have_the_documented_fields(run):
    _, doc = run
    for row in doc["rows"]:
        assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
        assert row["n"] == 6
        assert 0 <= row["accuracy"] <= 1
        assert row["latency_ms_p50"] <= row["latency_ms_p99"]
        assert row["degraded"] == 0


def test_bytes_and_device_terms_are_consistent(run):
    _, doc = run
    rows = {(r["scheme"], r["link"], r["mcu_mhz"]): r for r in doc["rows"]}
    budget = doc["schemes"]["agilenn-budget"]["budget_bytes"]
    assert rows[("agilenn-budget", "slow", 216)]["payload_bytes_mean"] <= budget
    for s in ("agilenn-ans", "edge-png"):
        r = rows[(s, "slow", 216)]
        assert r["wire_bytes_up_mean"] > r["payload_bytes_mean"]  # gRPC/HTTP2 framing is on the wire too
    assert rows[("edge-png", "slow", 216)]["device_ms"] == 0  # no NN on the device
    assert rows[("agilenn-ans", "slow", 64)]["device_ms"] == pytest.approx(
        rows[("agilenn-ans", "slow", 216)]["device_ms"] * 216 / 64, rel=1e-3)
    assert rows[("local-only", "none", 216)]["payload_bytes_mean"] == 0


def test_context_goodput_costs_and_goals(run):
    _, doc = run
    assert doc["shaper"]["shaper"] == "userspace"
    assert set(doc["goodput"]) == {"fast", "slow"}
    assert all(g["goodput_kbps"] > 0 for g in doc["goodput"].values())
    assert {"macs", "params", "int8_flash_bytes", "peak_sram_bytes"} <= set(doc["models"]["synthetic-agilenn"]["cost"])
    assert doc["goals"]["latency_vs_edge_png"]["link"] == "slow"
    assert doc["goals"]["latency_vs_edge_png"]["target_ratio"] == 0.70
    assert set(doc["goals"]["bytes_above_payload"]) >= {"up", "down", "met"}
    assert set(doc["goals"]["agilenn_overhead_pct_p50"]) == {"fast", "slow"}


def test_wire_bytes_split_into_payload_framing_and_tcpip(run):
    """Per direction: payload + framing is what the relay counted; TCP/IP is the relay's 66 B per
    segment under the userspace shaper; every networked row has the split."""
    _, doc = run
    for r in doc["rows"]:
        if r["link"] == "none":
            assert "wire_framing_up_mean" not in r
            continue
        assert r["wire_source"] == "relay"
        assert r["wire_payload_up_mean"] == pytest.approx(r["payload_bytes_mean"], abs=0.06)
        for d in ("up", "down"):
            assert r[f"wire_payload_{d}_mean"] + r[f"wire_framing_{d}_mean"] == pytest.approx(
                r[f"wire_bytes_{d}_mean"], abs=0.11)
            assert r[f"wire_framing_{d}_mean"] > 0
            assert r[f"wire_tcpip_{d}_mean"] == pytest.approx(66 * r[f"wire_segments_{d}_mean"], abs=0.7)
        assert r["wire_payload_down_mean"] == 10 * 2  # ten int16 logits


def test_markdown_samples_and_plots_are_written(run):
    out, _ = run
    text = (out / "latency-quick.md").read_text()
    assert "| agilenn-ans | slow |" in text
    assert "## Wire bytes per inference" in text
    samples = json.loads((out / "latency-quick-samples.json").read_text())
    assert len(samples["edge-png|slow"]["latency_ms"]["216"]) == 6
    for name in ("cdf", "pareto", "clock"):
        assert (out / f"latency-quick-{name}.png").stat().st_size > 1000


def test_the_host_encode_is_charged_unless_the_device_term_codes(run, monkeypatch):
    """Synthetic bundles have no firmware measurement (MAC model: the host's encode is charged); a
    measured device term is agn_device_run, which codes on the MCU, so the encode is not added twice."""
    from types import SimpleNamespace

    from agilenn.benchmarks import latency
    from agilenn.benchmarks.schemes import Measured

    _, doc = run
    assert all(r["encode_charged"] for r in doc["rows"])
    samples = [Measured(0, False, 100, 4, 0.5, encode, 20.0, 0, 0, 0, 0, 0.1) for encode in (0.4, 0.6)]
    p = SimpleNamespace(samples=samples)
    monkeypatch.setattr(latency, "_instructions", lambda _: None)
    assert latency._latency_ms(p, 0.0, 0.0).tolist() == pytest.approx([20.5, 20.7])
    monkeypatch.setattr(latency, "_instructions", lambda _: 1.5e6)
    assert latency._latency_ms(p, 0.0, 0.0).tolist() == pytest.approx([20.1, 20.1])


def test_the_local_predictor_overlaps_the_request(monkeypatch):
    """The firmware sends the payload before its local predictor runs: latency = device up to the
    payload + max(network, local predictor) + merge; a sample that sent nothing waits for it in full."""
    from types import SimpleNamespace

    from agilenn.benchmarks import latency
    from agilenn.benchmarks.mcu_cost import DeviceCost
    from agilenn.benchmarks.schemes import Measured

    samples = [Measured(0, False, 100, 4, 0.5, 0.3, network, 0, 0, 0, 0, 0.1) for network in (20.0, 0.5, 0.0)]
    p = SimpleNamespace(samples=samples, scheme=SimpleNamespace(runs_device_part=True, bundle=None))
    monkeypatch.setattr(latency, "_instructions", lambda _: 1.0e6)
    assert latency._latency_ms(p, 4.0, 1.0).tolist() == pytest.approx([24.1, 5.1, 5.1])
    split = DeviceCost(1000, 10, 100, 100, True, instructions=1.2e6, instructions_to_payload=1.0e6)
    monkeypatch.setattr(latency, "device_cost", lambda _: split)
    to_payload, local, macs = latency._device_ms(p, "stm32f746@200MHz")
    assert (to_payload, local, macs) == (pytest.approx(5.0), pytest.approx(1.0), 1000)
    whole = DeviceCost(1000, 10, 100, 100, True, instructions=1.2e6)  # measured before the split: all of it
    monkeypatch.setattr(latency, "device_cost", lambda _: whole)
    assert latency._device_ms(p, "stm32f746@200MHz") == (pytest.approx(6.0), 0.0, 1000)
