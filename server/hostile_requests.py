"""Seeded streams of hostile and valid requests, as raw wire bytes, with what the server must answer.

Used by the fuzz test (tests/server/test_server_fuzz.py) and the soak benchmark
(`agilenn-bench soak`). Each case is the serialized message a client would put on the wire (or
bytes that are no protobuf at all) plus the oracle: the ErrorCode name the reply must carry, or
"OK" with the payload whose remote logits it must equal. Corrupted payloads are judged by the
reference codec itself: if ``codec.decode`` accepts the bytes, the server must answer them like
any valid payload; if it rejects them, the server must answer INVALID_PAYLOAD. Nothing here talks
to a server.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from agilenn.codec import PayloadError, parse_header
from agilenn.models.bundle import Bundle
from agilenn.v1 import inference_pb2 as pb

# A protobuf tag with an impossible wire type (7): no parser accepts a message that starts with it.
_BAD_TAG = b"\x0f"


@dataclass
class Case:
    kind: str  # what was done to the request, e.g. "valid-ans", "garbage-protobuf", "ans-header-only"
    wire: bytes  # what goes on the wire as one gRPC message
    request_id: int  # the id the reply must carry (0 when the message does not parse)
    expect: str  # "OK" or the ErrorCode name the reply must carry; "OK|DEADLINE_EXCEEDED" allows either
    payload: bytes | None = None  # for "OK": the feature payload whose remote logits the reply must hold


class HostileRequests:
    """``next()`` returns one Case; the mix and every byte depend only on ``seed``."""

    KINDS = (
        "valid-ans", "valid-zstd", "valid-raw", "valid-truncated-channels", "valid-raw-image", "valid-timeout",
        "garbage-protobuf", "truncated-protobuf", "bit-flipped-payload", "truncated-payload", "ans-header-only",
        "ans-extra-zero-byte", "zstd-trailing-junk", "zstd-two-frames", "bad-magic", "unknown-model",
        "huge-model-name", "control-char-model-name", "no-input", "uppercase-image-format", "png-trailing-junk",
        "raw-image-wrong-size", "other-model-check",
    )

    def __init__(self, bundle: Bundle, seed: int = 0, valid_fraction: float = 0.5):
        self.bundle = bundle
        self.codec = bundle.codec()
        self.rng = np.random.default_rng(seed)
        self.valid_fraction = valid_fraction
        self._next_id = 1
        self._has_reference = bundle.has("reference")
        self._png = self._png_bytes()

    # --- building blocks -------------------------------------------------------------------
    def _features(self) -> np.ndarray:
        return self.rng.uniform(0, 2, size=self.bundle.remote_feature_shape).astype(np.float32)

    def _payload(self, coder: str | None = None, channels_sent: int | None = None) -> bytes:
        return self.codec.encode(self._features(), coder=coder, channels_sent=channels_sent)

    def _png_bytes(self) -> bytes | None:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a runtime dependency
            return None
        c, h, w = self.bundle.input_shape
        pixels = self.rng.integers(0, 256, size=(h, w) if c == 1 else (h, w, c), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return buf.getvalue()

    def _judge(self, kind: str, payload: bytes, **fields) -> Case:
        """A feature payload request whose expected answer the reference codec decides."""
        try:
            self.codec.decode(payload)
            expect = "OK"
        except PayloadError:
            expect = "INVALID_PAYLOAD"
        return self._request(kind, expect, feature_payload=payload, payload=payload if expect == "OK" else None,
                             **fields)

    def _request(self, kind: str, expect: str, payload: bytes | None = None, **fields) -> Case:
        rid = self._next_id
        self._next_id += 1
        return Case(kind, pb.InferRequest(request_id=rid, **fields).SerializeToString(), rid, expect, payload)

    # --- the cases --------------------------------------------------------------------------
    def next(self) -> Case:
        if self.rng.random() < self.valid_fraction:
            kind = self.rng.choice(self.KINDS[:6])
        else:
            kind = self.rng.choice(self.KINDS[6:])
        return self.make(str(kind))

    def make(self, kind: str) -> Case:
        r = self.rng
        total = self.bundle.remote_channels
        if kind in ("valid-ans", "valid-zstd", "valid-raw"):
            return self._judge(kind, self._payload(coder=kind.split("-")[1]))
        if kind == "valid-truncated-channels":
            return self._judge(kind, self._payload(channels_sent=int(r.integers(0, total + 1))))
        if kind == "valid-raw-image":
            if not self._has_reference:
                return self.make("valid-ans")
            c, h, w = self.bundle.input_shape
            data = r.integers(0, 256, size=h * w * c, dtype=np.uint8).tobytes()
            return self._request(kind, "OK", image=pb.EncodedImage(format="raw", data=data))
        if kind == "valid-timeout":  # a tight budget: answered, or expired in the queue
            case = self._judge(kind, self._payload(), timeout_ms=int(r.integers(1, 6)))
            case.expect = "OK|DEADLINE_EXCEEDED"
            return case
        if kind == "garbage-protobuf":
            return Case(kind, _BAD_TAG + r.bytes(int(r.integers(0, 64))), 0, "INVALID_PAYLOAD")
        if kind == "truncated-protobuf":  # cut inside the payload field: its declared length runs past the end
            whole = pb.InferRequest(request_id=self._next_id, feature_payload=self._payload()).SerializeToString()
            return Case(kind, whole[: len(whole) - int(r.integers(1, 8))], 0, "INVALID_PAYLOAD")
        if kind == "bit-flipped-payload":
            data = bytearray(self._payload(coder=str(r.choice(["ans", "zstd", "raw"]))))
            for _ in range(int(r.integers(1, 4))):
                i = int(r.integers(0, len(data)))
                data[i] ^= 1 << int(r.integers(0, 8))
            return self._judge(kind, bytes(data))
        if kind == "truncated-payload":
            data = self._payload(coder=str(r.choice(["ans", "zstd", "raw"])))
            return self._judge(kind, data[: int(r.integers(0, len(data)))])
        if kind == "ans-header-only":  # the header of a payload that sends channels, and no body
            data = self._payload(coder="ans", channels_sent=int(r.integers(1, total + 1)))
            return self._judge(kind, data[: parse_header(data).size])
        if kind == "ans-extra-zero-byte":
            return self._judge(kind, self._payload(coder="ans") + b"\x00")
        if kind == "zstd-trailing-junk":
            return self._judge(kind, self._payload(coder="zstd") + r.bytes(int(r.integers(1, 9))))
        if kind == "zstd-two-frames":
            data = self._payload(coder="zstd")
            return self._judge(kind, data + data[parse_header(data).size:])
        if kind == "bad-magic":
            return self._judge(kind, b"XX" + self._payload()[2:])
        if kind == "other-model-check":  # a payload built for a model of another shape (compact header)
            data = bytearray(self._payload())
            data[1] ^= int(r.integers(1, 256))
            return self._judge(kind, bytes(data))
        if kind == "unknown-model":
            return self._request(kind, "MODEL_NOT_FOUND", model=pb.ModelRef(name="no-such-model"),
                                 feature_payload=self._payload())
        if kind == "huge-model-name":
            name = "m" * int(r.integers(10_000, 20_001))
            return self._request(kind, "MODEL_NOT_FOUND", model=pb.ModelRef(name=name), feature_payload=self._payload())
        if kind == "control-char-model-name":
            return self._request(kind, "MODEL_NOT_FOUND", model=pb.ModelRef(name="synthetic\n\x1b[31m"),
                                 feature_payload=self._payload())
        if kind == "no-input":
            return self._request(kind, "INVALID_PAYLOAD")
        if kind in ("uppercase-image-format", "png-trailing-junk", "raw-image-wrong-size"):
            if not self._has_reference or self._png is None:
                return self.make("bad-magic")
            if kind == "uppercase-image-format":
                image = pb.EncodedImage(format="PNG", data=self._png)
            elif kind == "png-trailing-junk":
                image = pb.EncodedImage(format="png", data=self._png + r.bytes(int(r.integers(1, 17))))
            else:
                c, h, w = self.bundle.input_shape
                image = pb.EncodedImage(format="raw", data=bytes(h * w * c - 1))
            return self._request(kind, "INVALID_PAYLOAD", image=image)
        raise ValueError(f"unknown case kind {kind!r}")
