"""The device cost of a bundle, from the one source (agilenn.firmware.plan, the generated library).

Every consumer (the agent's MCU emulation, the latency benchmark's MCU model, the training report)
calls bundle_device_cost(); nothing else estimates MACs, flash or SRAM.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .plan import device_cost
from .quantize import quantize_device

KEYS = ("macs", "params", "weight_bytes", "code_bytes", "flash_bytes", "arena_bytes")


def bundle_device_cost(bundle) -> dict:
    """macs, params, weight_bytes, code_bytes, flash_bytes (None where no Cortex-M build was measured)
    and arena_bytes of the bundle's device part as the generated C library runs it.

    A bundle with an integer device part carries the figures in its manifest (measured when it was
    quantized). For one without (format 1, test bundles), the same plan runs on an in-memory
    quantization: MACs, parameters, tables and arena depend on the layer shapes only, so the
    calibration images do not matter (a fixed random set is used)."""
    cost = bundle.manifest.get("device_cost") or {}
    if bundle.has_int8_device and "arena_bytes" in cost:
        return {k: cost.get(k) for k in KEYS}
    if bundle.has_int8_device:
        return {k: v for k, v in device_cost(bundle.int8_device()).items() if k in KEYS}
    return dict(_structural_cost(str(bundle.onnx_path("device")), bundle.manifest_text))


@functools.lru_cache(maxsize=16)
def _structural_cost(device_onnx: str, manifest_text: str) -> tuple:
    import json

    from agilenn.models import load_bundle

    bundle = load_bundle(Path(device_onnx).parent, check_onnx=False)
    if bundle.manifest_text != manifest_text:  # the files changed under us: cost what is there now
        bundle.manifest = json.loads(manifest_text)
    c, h, w = bundle.input_shape
    images = np.random.default_rng(0).integers(0, 256, size=(8, h, w, c), dtype=np.uint8)
    return tuple((k, v) for k, v in device_cost(quantize_device(bundle, images)).items() if k in KEYS)
