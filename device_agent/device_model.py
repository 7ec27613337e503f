"""The device part of a bundle (extractor + local predictor), run on one thread.

Two numerics, the same interface:
- "int8" (the default when the bundle carries an integer device part, agilenn.firmware.int8): the
  exact integers the generated C library computes on an MCU; the remote channels come out as
  centroid indices already (integer thresholds), the local logits as int16 times their scale.
- "float": device.onnx under onnxruntime; the codec quantizes the float remote features.

One thread on purpose: the agent stands in for a single-core MCU, and a second thread would only
make host timings look better than any device could be.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from agilenn.models.bundle import DEVICE_INPUT, DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES, Bundle

NUMERICS = ("auto", "int8", "float")


def single_thread_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class DeviceOutput:
    local_logits: np.ndarray  # float32 [classes] (int8 numerics: the int16 logits times their scale)
    remote_features: np.ndarray | None  # float32 [C - k, h, w]; None with int8 numerics
    compute_ms: float  # measured on this host
    remote_indices: np.ndarray | None = None  # uint8 [C - k, h, w] centroid indices (int8 numerics)
    local_logits_int16: np.ndarray | None = None  # int16 [classes] (int8 numerics)

    def indices(self, codec) -> np.ndarray:
        """The centroid indices to send: the integer part's own, or the codec's quantization of the float features."""
        return self.remote_indices if self.remote_indices is not None else codec.quantize(self.remote_features)


def resolve_numerics(bundle: Bundle, numerics: str = "auto") -> str:
    if numerics not in NUMERICS:
        raise ValueError(f"device numerics must be one of {', '.join(NUMERICS)}, got {numerics!r}")
    if numerics == "auto":
        return "int8" if bundle.has_int8_device else "float"
    if numerics == "int8" and not bundle.has_int8_device:
        raise ValueError(f"bundle {bundle.path} has no integer device part (run agilenn-firmware quantize); "
                         "use float numerics")
    return numerics


class DevicePart:
    def __init__(self, bundle: Bundle, numerics: str = "auto"):
        self.bundle = bundle
        self.numerics = resolve_numerics(bundle, numerics)
        if self.numerics == "int8":
            self.int8 = bundle.int8_device()
            self.session = None
        else:
            self.int8 = None
            self.session = single_thread_session(bundle.onnx_path("device"))

    def run(self, image: np.ndarray) -> DeviceOutput:
        """One uint8 image, [H, W, C] (or [H, W] for one channel)."""
        if self.int8 is not None:
            x = np.asarray(image)
            if x.dtype != np.uint8:
                raise ValueError(f"the integer device part takes uint8 images, got {x.dtype}")
            self.bundle.preprocess(x[None])  # the same shape check and message as the float path
            start = time.perf_counter()
            out = self.int8.run(x[None])
            elapsed = (time.perf_counter() - start) * 1e3
            return DeviceOutput(self.int8.dequantize_logits(out.logits[0]), None, elapsed,
                                remote_indices=out.indices[0], local_logits_int16=out.logits[0])
        x = self.bundle.preprocess(np.asarray(image)[None])
        start = time.perf_counter()
        local, remote = self.session.run([DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES], {DEVICE_INPUT: x})
        elapsed = (time.perf_counter() - start) * 1e3
        return DeviceOutput(local[0], remote[0], elapsed)
