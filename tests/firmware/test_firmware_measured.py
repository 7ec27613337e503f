"""The measured device cost: recorded per bundle, ignored when stale, used by the MCU model."""

from __future__ import annotations

import json
import shutil

import pytest

from agilenn.device_agent.mcu import BASIS_MACS, BASIS_MEASURED, M7_CYCLES_PER_INSTRUCTION, parse_mcu
from agilenn.firmware.measured import MEASURED_FILE, measured_device_cost, sources_sha256
from agilenn.models import DEFAULT_REPOSITORY, ModelRepository, load_bundle

SHIPPED = ["agilenn-fashion-mnist", "plain-split-fashion-mnist", "agilenn-cifar10", "plain-split-cifar10"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_measurements_are_current(name):
    bundle = ModelRepository([DEFAULT_REPOSITORY]).resolve(name)
    measured = measured_device_cost(bundle)
    assert measured is not None, (
        f"{bundle.path / MEASURED_FILE} is missing or stale (the C sources or the integer device part changed): "
        f"rerun `agilenn-firmware run --bundle {bundle.path} --limit 100 --record` with a server up")
    assert measured["images"] >= 100 and measured["board"] == "mps2-an500"
    i = measured["instructions_per_inference"]
    assert 0 < i["min"] <= i["mean"] <= i["max"]
    assert measured["instructions_per_mac"] == pytest.approx(i["mean"] / measured["device_macs"])
    assert measured["ram_bytes"] == measured["static_ram_bytes"] + measured["stack_high_water_bytes"]
    # the part before the payload goes out (agn_device_features); the local predictor is the rest
    to_payload = measured["instructions_to_payload"]
    assert 0 < to_payload["min"] <= to_payload["mean"] <= to_payload["max"] < i["min"]


def test_a_measurement_for_other_sources_or_weights_is_ignored(tmp_path):
    shipped = ModelRepository([DEFAULT_REPOSITORY]).resolve(SHIPPED[0])
    copy = tmp_path / "bundle"
    shutil.copytree(shipped.path, copy)
    path = copy / MEASURED_FILE
    data = json.loads(path.read_text())
    assert measured_device_cost(load_bundle(copy)) is not None
    path.write_text(json.dumps({**data, "sources_sha256": "0" * 64}))
    assert measured_device_cost(load_bundle(copy)) is None
    path.write_text(json.dumps({**data, "int8_sha256": "0" * 64}))
    assert measured_device_cost(load_bundle(copy)) is None
    assert data["sources_sha256"] == sources_sha256("mps2-an500")


def test_mcu_model_uses_measured_instructions_when_there_are_some():
    from agilenn.benchmarks.mcu_cost import device_cost, device_report

    mcu = parse_mcu("stm32f746@216MHz")
    assert mcu.compute_ms(1000, 2_160_000) == pytest.approx(2_160_000 * M7_CYCLES_PER_INSTRUCTION / 216e6 * 1e3)
    assert mcu.compute_ms(1000) == pytest.approx(1000 * mcu.core.cycles_per_mac / 216e6 * 1e3)

    shipped = ModelRepository([DEFAULT_REPOSITORY]).resolve(SHIPPED[0])
    cost = device_cost(shipped)
    assert cost.basis == BASIS_MEASURED
    assert cost.instructions == measured_device_cost(shipped)["instructions_per_inference"]["mean"]
    assert cost.instructions_to_payload == measured_device_cost(shipped)["instructions_to_payload"]["mean"]
    report = device_report(shipped, ["stm32f746@216MHz", "stm32f746@64MHz"])
    assert report["basis"] == BASIS_MEASURED
    fast, slow = report["per_mcu"]
    assert fast["basis"] == BASIS_MEASURED and fast["compute_ms"] == pytest.approx(cost.instructions / 216e3)
    assert slow["compute_ms"] == pytest.approx(fast["compute_ms"] * 216 / 64)


def test_mcu_model_falls_back_to_macs_without_a_measurement(tmp_path):
    from agilenn.benchmarks.mcu_cost import device_cost
    from agilenn.models.synthetic import make_random_bundle

    cost = device_cost(load_bundle(make_random_bundle(tmp_path / "synthetic")))
    assert cost.instructions is None and cost.basis == BASIS_MACS
