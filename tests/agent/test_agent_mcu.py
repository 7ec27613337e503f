"""MCU cost model: MAC counting from ONNX graphs and the MCU table."""

from __future__ import annotations

import pytest

from agilenn.device_agent.mcu import CHIPS, CORES, M7_CYCLES_PER_MAC, PRESETS, parse_mcu
from agilenn.firmware.cost import bundle_device_cost
from agilenn.models import load_bundle


def test_macs_of_the_synthetic_device_part(synthetic_bundle):
    # Conv 1->8 channels, 4x4 kernel, stride 4 on 28x28 -> 8x7x7 outputs of 16 taps; Gemm 2*7*7 -> 10.
    assert bundle_device_cost(load_bundle(synthetic_bundle))["macs"] == 8 * 49 * 16 + 980


def test_presets_parse_and_scale_with_clock():
    for spec in PRESETS:
        mcu = parse_mcu(spec)
        assert mcu.spec == spec and mcu.core.name in CORES
    f216, f64 = parse_mcu("stm32f746@216MHz"), parse_mcu("stm32f746@64MHz")
    assert f216.core.cycles_per_mac == pytest.approx(1.74, abs=0.01) == M7_CYCLES_PER_MAC
    assert f64.compute_ms(10**6) == pytest.approx(f216.compute_ms(10**6) * 216 / 64)
    # the sourced anchor: CMSIS-NN's 12.3 M-MAC CIFAR-10 CNN in 99.1 ms on this chip at 216 MHz
    assert f216.compute_ms(12_300_000) == pytest.approx(99.1)
    assert parse_mcu("stm32f746").clock_hz == 216e6
    assert parse_mcu("cortex-m4@0.064GHz").clock_hz == pytest.approx(64e6)
    assert parse_mcu("cortex-m4@64MHz").core.cycles_per_mac > f216.core.cycles_per_mac
    assert set(CHIPS) >= {"stm32f746"}


@pytest.mark.parametrize("bad", ["", "z80@4MHz", "stm32f746@400MHz", "cortex-m4", "stm32f746@fastMHz"])
def test_bad_specs(bad):
    with pytest.raises(ValueError):
        parse_mcu(bad)
