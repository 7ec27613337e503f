"""The device part of a bundle (extractor + local predictor), run by onnxruntime on one thread.

One thread on purpose: the agent stands in for a single-core MCU, and a second thread would only
make host timings look better than any device could be.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from agilenn.models.bundle import DEVICE_INPUT, DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES, Bundle


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
    local_logits: np.ndarray  # float32 [classes]
    remote_features: np.ndarray  # float32 [C - k, h, w]
    compute_ms: float  # measured on this host


class DevicePart:
    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.session = single_thread_session(bundle.onnx_path("device"))

    def run(self, image: np.ndarray) -> DeviceOutput:
        """One uint8 image, [H, W, C] (or [H, W] for one channel)."""
        x = self.bundle.preprocess(np.asarray(image)[None])
        start = time.perf_counter()
        local, remote = self.session.run([DEVICE_LOCAL_LOGITS, DEVICE_REMOTE_FEATURES], {DEVICE_INPUT: x})
        elapsed = (time.perf_counter() - start) * 1e3
        return DeviceOutput(local[0], remote[0], elapsed)
