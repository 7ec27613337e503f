"""Payloads of the serial message types (docs/serial-protocol.md, "Messages"). Little-endian.

Each message is a small dataclass with pack() and a parse() classmethod that raises
FrameError(BAD_MESSAGE) on a payload that does not fit its layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .framing import ErrorCode, FrameError

FLAG_WANT_LOGITS = 0x01  # HELLO.flags: the MCU wants merged logits in every PREDICTION
FLAG_DEGRADED = 0x01  # PREDICTION.flags: answered by the local predictor alone

IMAGE_FORMAT_RAW = 0  # uint8 pixels, row-major HWC


class Reason:
    """Why an answer is degraded (PREDICTION.reason); 0 for a full answer."""

    NONE = 0
    SERVER_UNAVAILABLE = 1  # not connected (down, refused, reconnecting)
    DEADLINE = 2  # no remote answer within --deadline-ms
    STREAM_BROKEN = 3  # the stream broke while the request was in flight
    MODEL_MISMATCH = 4  # the server serves a different model name/version
    SERVER_ERROR = 5  # the server answered this request with an in-band error
    NO_SERVER = 6  # the agent runs local-only by configuration

    NAMES = {0: "none", 1: "server_unavailable", 2: "deadline", 3: "stream_broken", 4: "model_mismatch",
             5: "server_error", 6: "no_server"}
    CODES = {v: k for k, v in NAMES.items()}


def _bad(message: str) -> FrameError:
    return FrameError(ErrorCode.BAD_MESSAGE, message)


@dataclass(frozen=True)
class Hello:
    """MCU -> agent. The first frame after reset; may be repeated at any time."""

    flags: int = 0
    max_rx: int = 0  # largest frame payload the MCU can receive; 0: no limit announced
    firmware: str = ""
    version: int = 1
    _S = struct.Struct("<BBH")

    def pack(self) -> bytes:
        return self._S.pack(self.version, self.flags, self.max_rx) + self.firmware.encode()[:64]

    @classmethod
    def parse(cls, payload: bytes) -> "Hello":
        if len(payload) < cls._S.size or len(payload) > cls._S.size + 64:
            raise _bad(f"HELLO payload must be 4..68 bytes, got {len(payload)}")
        version, flags, max_rx = cls._S.unpack_from(payload)
        return cls(flags, max_rx, payload[cls._S.size:].decode("utf-8", "replace"), version)


@dataclass(frozen=True)
class HelloReply:
    """Agent -> MCU. What the agent expects in IMAGE frames and which model answers."""

    channels: int
    height: int
    width: int
    num_classes: int
    max_payload: int
    model: str = ""  # "name:version"
    server_connected: bool = False
    version: int = 1
    _S = struct.Struct("<BBHHHHH")

    def pack(self) -> bytes:
        return self._S.pack(self.version, int(self.server_connected), self.max_payload, self.channels, self.height,
                            self.width, self.num_classes) + self.model.encode()[:128]

    @classmethod
    def parse(cls, payload: bytes) -> "HelloReply":
        if len(payload) < cls._S.size:
            raise _bad(f"HELLO_REPLY payload must be at least {cls._S.size} bytes, got {len(payload)}")
        version, flags, max_payload, c, h, w, n = cls._S.unpack_from(payload)
        return cls(c, h, w, n, max_payload, payload[cls._S.size:].decode("utf-8", "replace"), bool(flags & 1), version)


@dataclass(frozen=True)
class Image:
    """MCU -> agent. One image to classify."""

    pixels: np.ndarray  # uint8 [H, W, C]
    _S = struct.Struct("<BBHHH")

    def pack(self) -> bytes:
        px = np.asarray(self.pixels, dtype=np.uint8)
        if px.ndim == 2:
            px = px[..., None]
        h, w, c = px.shape
        return self._S.pack(IMAGE_FORMAT_RAW, 0, h, w, c) + np.ascontiguousarray(px).tobytes()

    @classmethod
    def parse(cls, payload: bytes) -> "Image":
        if len(payload) < cls._S.size:
            raise _bad(f"IMAGE payload must be at least {cls._S.size} bytes, got {len(payload)}")
        fmt, _, h, w, c = cls._S.unpack_from(payload)
        if fmt != IMAGE_FORMAT_RAW:
            raise _bad(f"IMAGE format {fmt} is not supported (only 0, raw uint8 HWC)")
        size = h * w * c
        if len(payload) - cls._S.size != size:
            raise _bad(f"IMAGE of {h}x{w}x{c} needs {size} pixel bytes, got {len(payload) - cls._S.size}")
        return cls(np.frombuffer(payload, np.uint8, size, cls._S.size).reshape(h, w, c))


@dataclass(frozen=True)
class Prediction:
    """Agent -> MCU. The answer to one IMAGE (same seq)."""

    label: int
    degraded: bool = False
    reason: int = Reason.NONE
    channels_sent: int = 0
    channels_total: int = 0
    payload_bytes: int = 0
    latency_us: int = 0
    logits: list = field(default_factory=list)  # merged logits, only when the MCU asked for them
    _S = struct.Struct("<HBBHHIIH")

    def pack(self) -> bytes:
        head = self._S.pack(self.label, FLAG_DEGRADED if self.degraded else 0, self.reason, self.channels_sent,
                            self.channels_total, min(self.payload_bytes, 0xFFFFFFFF), min(self.latency_us, 0xFFFFFFFF),
                            len(self.logits))
        return head + np.asarray(self.logits, dtype="<f4").tobytes()

    @classmethod
    def parse(cls, payload: bytes) -> "Prediction":
        if len(payload) < cls._S.size:
            raise _bad(f"PREDICTION payload must be at least {cls._S.size} bytes, got {len(payload)}")
        label, flags, reason, sent, total, nbytes, lat, n = cls._S.unpack_from(payload)
        if len(payload) != cls._S.size + 4 * n:
            raise _bad(f"PREDICTION announces {n} logits but carries {len(payload) - cls._S.size} bytes of them")
        logits = np.frombuffer(payload, "<f4", n, cls._S.size).tolist()
        return cls(label, bool(flags & FLAG_DEGRADED), reason, sent, total, nbytes, lat, logits)


@dataclass(frozen=True)
class ErrorMsg:
    """Agent -> MCU. The answer to a frame that could not be served; seq is SEQ_NONE if unknown."""

    code: int
    detail: str = ""
    _S = struct.Struct("<BB")

    def pack(self) -> bytes:
        return self._S.pack(self.code, 0) + self.detail.encode()[:128]

    @classmethod
    def parse(cls, payload: bytes) -> "ErrorMsg":
        if len(payload) < cls._S.size:
            raise _bad(f"ERROR payload must be at least {cls._S.size} bytes, got {len(payload)}")
        code, _ = cls._S.unpack_from(payload)
        return cls(code, payload[cls._S.size:].decode("utf-8", "replace"))

    @property
    def code_name(self) -> str:
        return ErrorCode.NAMES.get(self.code, str(self.code))


PREDICTION_FIXED = Prediction._S.size  # PREDICTION payload bytes before the logits
