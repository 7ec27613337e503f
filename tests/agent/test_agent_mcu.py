"""MCU cost model: MAC counting from ONNX graphs and the MCU table."""

from __future__ import annotations

import numpy as np
import pytest

from agilenn.device_agent.mcu import CHIPS, CORES, M7_CYCLES_PER_MAC, PRESETS, count_macs, layer_macs, parse_mcu
from agilenn.models import load_bundle


def test_macs_of_the_synthetic_device_part(synthetic_bundle):
    # Conv 1->8 channels, 4x4 kernel, stride 4 on 28x28 -> 8x7x7 outputs of 16 taps; Gemm 2*7*7 -> 10.
    layers = layer_macs(load_bundle(synthetic_bundle).onnx_path("device"))
    assert [(layer.op, layer.macs) for layer in layers] == [("Conv", 8 * 7 * 7 * 16), ("Gemm", 98 * 10)]
    assert count_macs(load_bundle(synthetic_bundle).onnx_path("device")) == 8 * 49 * 16 + 980


def test_macs_of_grouped_padded_conv_and_matmul(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((16, 2, 3, 3), np.float32), "w")  # 8 in, 16 out, 4 groups
    m = numpy_helper.from_array(np.zeros((16 * 10 * 10, 5), np.float32), "m")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Reshape", ["y", "shape"], ["f"]),
         helper.make_node("MatMul", ["f", "m"], ["out"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 20, 20])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [w, m, shape])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    conv, matmul = layer_macs(path)
    assert conv.macs == 16 * 10 * 10 * 2 * 9  # each output: 2 input channels of its group x 3x3 taps
    assert matmul.macs == 5 * 1600


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
