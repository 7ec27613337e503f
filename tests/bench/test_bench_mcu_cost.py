"""The MCU cost figures, checked by hand on the synthetic bundle's tiny device graph:

    image [1,28,28] -> Conv(8 filters, 4x4, stride 4) -> Relu -> features [8,7,7]
    features[:2] -> Flatten -> Gemm(98 -> 10) -> local_logits;  features[2:] -> remote_features
"""

import pytest

from agilenn.benchmarks.mcu_cost import ENERGY_PER_CYCLE_J, device_cost, device_report, estimate
from agilenn.models import load_bundle
from agilenn.models.synthetic import make_random_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_random_bundle(tmp_path_factory.mktemp("bundle")))


def test_device_cost_by_hand(bundle):
    """The figures come from the C generator's plan (agilenn.firmware), the one source of device cost."""
    cost = device_cost(bundle)
    conv_w, conv_b, fc_w, fc_b = 8 * 1 * 4 * 4, 8, 10 * 98, 10
    assert cost.params == conv_w + conv_b + fc_w + fc_b  # int8 weights + one int32 bias per output channel
    assert cost.macs == 8 * 49 * 16 + 98 * 10
    # no Cortex-M build measured for a bundle without an integer part: flash is the tables alone,
    # int8 weights + per output channel int32 bias, int32 multiplier, uint8 shift + 3 int16 thresholds
    assert not cost.flash_measured
    assert cost.int8_flash_bytes == conv_w + fc_w + 9 * (conv_b + fc_b) + 2 * 3
    # the arena's peak: while the conv runs, its input (784), its output (392) and the int16 im2col
    # scratch sized for the largest layer (the dense layer's 98 inputs, padded to 100: the kernels'
    # packed rows are multiples of 4) are all live
    assert cost.peak_sram_bytes == 784 + 392 + 2 * 100


def test_time_scales_with_clock_energy_does_not(bundle):
    report = device_report(bundle, ["stm32f746@64MHz", "stm32f746@216MHz"])
    slow, fast = report["per_mcu"]
    assert slow["compute_ms"] == pytest.approx(fast["compute_ms"] * 216 / 64)
    assert slow["energy_mj"] == pytest.approx(fast["energy_mj"])
    assert "1801.06601" in report["cycles_per_mac_source"] and "DS10916" in report["energy_source"]


def test_energy_is_cycles_times_energy_per_cycle():
    e = estimate(1_000_000, "stm32f746@216MHz")
    assert e.energy_mj == pytest.approx(1e6 * e.cycles_per_mac * ENERGY_PER_CYCLE_J * 1e3, rel=1e-3)
    assert e.compute_ms == pytest.approx(1e6 * e.cycles_per_mac / 216e6 * 1e3, rel=1e-3)
