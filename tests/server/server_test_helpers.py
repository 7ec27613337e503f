"""Helpers shared by the server tests (a uniquely named module: `from conftest import ...` breaks
when another test folder has a conftest.py too)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from agilenn.v1 import inference_pb2 as pb


class Remote:
    """The remote ONNX model run directly, the reference the server's answers are checked against."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.codec = bundle.codec()
        self.session = ort.InferenceSession(str(bundle.onnx_path("remote")), providers=["CPUExecutionProvider"])

    def payload(self, seed: int, channels_sent=None, coder=None) -> bytes:
        rng = np.random.default_rng(seed)
        features = rng.uniform(0, 2, size=self.bundle.remote_feature_shape).astype(np.float32)
        return self.codec.encode(features, coder=coder, channels_sent=channels_sent)

    def logits(self, payload: bytes) -> np.ndarray:
        features = self.codec.decode(payload).features
        return self.session.run(["remote_logits"], {"remote_features": features[None]})[0][0]


def logits_of(response: pb.InferResponse) -> np.ndarray:
    assert response.WhichOneof("result") == "logits", response
    return np.asarray(response.logits.values, dtype=np.float32)
