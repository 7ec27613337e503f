"""The generated library's memory plan and device cost: the one source of truth for what the device
part costs on an MCU (MACs, parameters, weight flash, arena SRAM).

The C generator places every tensor at the offsets computed here and the compiler checks them
(_Static_assert); the training report, the latency benchmark's MCU model and the agent read the same
numbers (``device_cost``), so no second estimator can disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .int8 import Int8DeviceModel

ALIGN = 4


@dataclass
class Buffer:
    name: str
    size: int  # bytes
    first: int  # first step that writes it
    last: int  # last step that reads it
    offset: int = -1


@dataclass
class Plan:
    buffers: dict = field(default_factory=dict)  # name -> Buffer
    arena_bytes: int = 0
    steps: list = field(default_factory=list)  # step names, in order

    def offset(self, name: str) -> int:
        return self.buffers[name].offset

    def overlapping_live_pairs(self):
        """Pairs of buffers alive at the same step (they must not share bytes)."""
        bufs = list(self.buffers.values())
        for i, a in enumerate(bufs):
            for b in bufs[i + 1:]:
                if a.first <= b.last and b.first <= a.last:
                    yield a, b


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def scratch_elements(model: Int8DeviceModel) -> int:
    """int16 elements of the im2col scratch the largest layer needs."""
    shapes = dict(model.tensor_shapes())
    need = 0
    names = ["input", *[layer.name for layer in model.extractor]]
    for layer, src in zip(model.extractor, names):
        need = max(need, _layer_scratch(layer, shapes[src]))
    src = "local_in"
    for layer in model.local:
        need = max(need, _layer_scratch(layer, shapes[src]))
        src = layer.name
    return need


def _layer_scratch(layer, in_hwc) -> int:
    h, w, c = in_hwc
    kind = layer.kind
    if kind == "dense":
        return _pad4(h * w * c)
    _, kh, kw, ig = layer.weights.shape
    if kind == "dwconv":
        return max(kh * kw, (c + 1) // 2)  # a row of c int8 zero points for padding taps (agn_dwconv_s8)
    if kind == "conv1x1":
        return 2 * _pad4(c)  # two pixels' columns, interleaved (agn_kernels.c, dot4x2_pairs)
    return 2 * _pad4(kh * kw * c)


def _pad4(n: int) -> int:
    """The C kernels' packed rows and activation buffers are padded to a multiple of 4 (agn_kernels.c)."""
    return (n + 3) // 4 * 4


def make_plan(model: Int8DeviceModel, coder_scratch_bytes: int = 0) -> Plan:
    """Lifetimes of every buffer over the run's steps, then greedy first-fit placement (largest first)."""
    shapes = model.tensor_shapes()
    steps = ["input"] + [layer.name for layer in model.extractor] + ["indices", "local_in"] + \
        [layer.name for layer in model.local] + ["encode"]
    pos = {s: i for i, s in enumerate(steps)}
    size = {name: h * w * c for name, (h, w, c) in shapes}
    fh, fw, fc = model.feature_hwc
    feat = model.extractor[-1].name
    bufs = []
    # each extractor/local tensor lives from its producing step to the step that consumes it
    chain = ["input"] + [layer.name for layer in model.extractor]
    for a, b in zip(chain, chain[1:]):
        bufs.append(Buffer(a, size[a], pos[a], pos[b]))
    bufs.append(Buffer(feat, size[feat], pos[feat], pos["local_in"]))
    bufs.append(Buffer("indices", (fc - model.k) * fh * fw, pos["indices"], pos["encode"]))
    chain = ["local_in"] + [layer.name for layer in model.local]
    for a, b in zip(chain, chain[1:]):
        bufs.append(Buffer(a, size[a], pos[a], pos[b]))
    logits = model.local[-1].name
    bufs.append(Buffer(logits, 2 * model.num_classes, pos[logits], pos["encode"]))
    bufs.append(Buffer("scratch", 2 * scratch_elements(model), pos[model.extractor[0].name], pos[logits]))
    if coder_scratch_bytes:
        bufs.append(Buffer("coder", coder_scratch_bytes, pos["encode"], pos["encode"]))

    placed = []
    for b in sorted(bufs, key=lambda b: (-b.size, b.first)):
        offset = 0
        # first fit: step past every live, already placed buffer it would overlap, until none does
        moved = True
        while moved:
            moved = False
            for other in placed:
                live = b.first <= other.last and other.first <= b.last
                if live and offset < other.offset + _align(other.size) and other.offset < offset + _align(b.size):
                    offset = other.offset + _align(other.size)
                    moved = True
        b.offset = offset
        placed.append(b)
    plan = Plan({b.name: b for b in bufs}, max(b.offset + _align(b.size) for b in bufs), steps)
    for a, b in plan.overlapping_live_pairs():
        assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    return plan


def layer_macs(model: Int8DeviceModel) -> list:
    """(layer name, multiply-accumulates) per layer for one image."""
    shapes = dict(model.tensor_shapes())
    out = []
    for layer in model.layers():
        h, w, c = shapes[layer.name]
        taps = int(layer.weights[0].size)  # per output value: kh*kw*(c_in/groups), or the dense fan-in
        out.append((layer.name, h * w * c * taps))
    return out


def device_cost(model: Int8DeviceModel, code_bytes: int | None = None, coder_table_bytes: int = 0) -> dict:
    """What the integer device part costs on an MCU.

    weight_bytes: the const tables the generator emits (int8 weights, int32 bias, int32 multiplier,
    uint8 shift per output channel, int16 thresholds, int16 padding values pad_in where the first
    conv has per-channel input zero points, plus the coder's frequency tables).
    code_bytes: the library's .text+.rodata minus the tables, from arm-none-eabi-size on a Cortex-M7
    -O2 build (None where that compiler was absent). arena_bytes: the generator's static arena."""
    weights = sum(int(layer.weights.size) for layer in model.layers())
    channels = sum(layer.out_channels for layer in model.layers())
    zp_tables = sum(int(layer.zp_in_channels.size) for layer in model.layers()  # the C kernel's pad_in
                    if layer.zp_in_channels is not None and layer.kind == "conv")
    table_bytes = weights + channels * (4 + 4 + 1) + 2 * int(model.thresholds.size) + 2 * zp_tables + coder_table_bytes
    plan = make_plan(model)
    return {
        "macs": int(sum(m for _, m in layer_macs(model))),
        "params": int(weights + channels),
        "weight_bytes": int(table_bytes),
        "code_bytes": None if code_bytes is None else int(code_bytes),
        "flash_bytes": None if code_bytes is None else int(code_bytes + table_bytes),
        "arena_bytes": int(plan.arena_bytes),
        "source": "agilenn.firmware.plan (the generated C library's tables and arena)",
    }
