"""What the device part costs on an MCU: MACs, parameters, int8 flash, peak SRAM, time and energy.

MACs and the cycles-per-MAC figure come from the agent's cost model (agilenn.device_agent.mcu:
CMSIS-NN's CIFAR-10 CNN on an STM32F746, Lai et al. 2018, arXiv:1801.06601). This module adds what
a deployment also has to fit, all read from the device ONNX graph, assuming int8 deployment with
batch-norm folded into the convolutions (as CMSIS-NN/TFLite-Micro deploy):

- flash: int8 weights (1 byte) + int32 biases (4 bytes) of every Conv/Gemm/MatMul; any other float
  initializer is counted at 4 bytes (conservative: it would normally be folded away).
- peak SRAM: int8 activations, 1 byte per element. Tensors live from the node that makes them to
  the last node that reads them; graph outputs (the remote features waiting to be sent, the local
  logits) live to the end. Reshape-like nodes alias their input. Scratch buffers (CMSIS-NN's
  im2col) and the stack are not included.
- energy: cycles x energy per cycle. STM32F746 at 216 MHz draws about 102 mA typical in Run mode
  with peripherals off (datasheet DS10916, Run-mode current table; ~472 uA/MHz), at VDD = 3.3 V:
  3.3 V x 0.472 mA/MHz = 1.56 nJ/cycle. Assumption: current scales linearly with the clock, so
  energy per inference is the same at every clock (static current ignored). The radio's energy is
  not modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from agilenn.device_agent.mcu import Mcu, count_macs, parse_mcu

VDD = 3.3
RUN_CURRENT_A_PER_HZ = 0.472e-3 / 1e6  # STM32F746, DS10916 Run mode typical, peripherals disabled
ENERGY_PER_CYCLE_J = VDD * RUN_CURRENT_A_PER_HZ  # ~1.56 nJ
ENERGY_SOURCE = ("STM32F746 datasheet DS10916, Run-mode typical current, peripherals disabled: ~102 mA at 216 MHz "
                 "(472 uA/MHz) at VDD 3.3 V")

_ALIASES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx.TensorProto)


@dataclass(frozen=True)
class GraphCost:
    macs: int
    params: int
    int8_flash_bytes: int
    peak_sram_bytes: int


def graph_cost(onnx_path) -> GraphCost:
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    g = model.graph
    inits = {t.name: t for t in g.initializer}

    # --- parameters and flash ---------------------------------------------------------------
    weight_bytes = {}
    for node in g.node:
        if node.op_type in _WEIGHTED:
            if len(node.input) > 1 and node.input[1] in inits:
                weight_bytes[node.input[1]] = 1
            if len(node.input) > 2 and node.input[2] in inits:
                weight_bytes[node.input[2]] = 4
    params = flash = 0
    for name, t in inits.items():
        if t.data_type not in _FLOAT_TYPES:
            continue  # shapes, axes, slice bounds: compiled into the code, not stored as parameters
        n = int(numpy_helper.to_array(t).size)
        params += n
        flash += n * weight_bytes.get(name, 4)

    # --- peak SRAM: liveness over the node order (ONNX graphs are topologically sorted) ------
    def elements(value_info) -> int:
        n = 1
        for d in value_info.type.tensor_type.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        return n

    infos = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
    size = {name: elements(vi) for name, vi in infos.items()
            if vi.type.tensor_type.elem_type in _FLOAT_TYPES or vi.type.tensor_type.elem_type == 2}  # 2: uint8
    root = {}  # alias -> the buffer it views

    def buffer(name):
        while name in root:
            name = root[name]
        return name

    for node in g.node:
        if node.op_type in _ALIASES and node.input and node.input[0] in size:
            root[node.output[0]] = node.input[0]
    last_use = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            if name in size and name not in inits:
                last_use[buffer(name)] = i
    end = len(g.node)
    for out in g.output:
        last_use[buffer(out.name)] = end

    live = {buffer(vi.name): size.get(vi.name, 0) for vi in g.input if vi.name not in inits}
    peak = sum(live.values())
    for i, node in enumerate(g.node):
        for name in node.output:
            if name in size and name not in root:
                live[name] = size[name]
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= i:
                del live[name]
    return GraphCost(int(count_macs(onnx_path)), int(params), int(flash), int(peak))


@dataclass(frozen=True)
class McuEstimate:
    mcu: str
    mhz: float
    cycles_per_mac: float
    compute_ms: float
    energy_mj: float


def estimate(macs: int, mcu: Mcu | str) -> McuEstimate:
    mcu = parse_mcu(mcu) if isinstance(mcu, str) else mcu
    cycles = macs * mcu.core.cycles_per_mac
    return McuEstimate(mcu.spec, mcu.clock_hz / 1e6, round(mcu.core.cycles_per_mac, 4), mcu.compute_ms(macs),
                       cycles * ENERGY_PER_CYCLE_J * 1e3)


def device_report(bundle, mcus) -> dict:
    """The cost block of the results: graph figures plus time and energy per MCU clock."""
    cost = graph_cost(bundle.onnx_path("device"))
    first = parse_mcu(mcus[0])
    return {
        **asdict(cost),
        "cycles_per_mac": round(first.core.cycles_per_mac, 4),
        "cycles_per_mac_source": first.core.source,
        "energy_per_cycle_nj": round(ENERGY_PER_CYCLE_J * 1e9, 4),
        "energy_source": ENERGY_SOURCE,
        "per_mcu": [asdict(estimate(cost.macs, m)) for m in mcus],
    }
