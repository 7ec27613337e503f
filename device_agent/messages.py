"""Payloads of the serial message types (docs/serial-protocol.md, "Messages"). Little-endian.

Each message is a small dataclass with pack() and a parse() classmethod that raises
FrameError(BAD_MESSAGE) on a payload that does not fit its layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .framing import PROTOCOL_VERSION, ErrorCode, FrameError

FLAG_WANT_LOGITS = 0x01  # HELLO.flags: the MCU wants merged logits in every PREDICTION
HELLO_KNOWN_FLAGS = FLAG_WANT_LOGITS  # every other HELLO flag bit is reserved and must be 0
FLAG_DEGRADED = 0x01  # PREDICTION.flags: answered by the local predictor alone

IMAGE_FORMAT_RAW = 0  # uint8 pixels, row-major HWC
LOGITS_INT16 = 1  # FEATURES.format: int16 local logits, logit = scale * q
LOGITS_FOLLOW = 0  # FEATURES.format (version 3): the logits follow in a LOCAL frame with the same seq

HELLO_NAME_MAX = 64
HELLO_REPLY_FIXED = 12
HELLO_REPLY_NAME_MAX = 128
ERROR_FIXED = 2
ERROR_DETAIL_MAX = 128
# The smallest receive buffer an MCU may announce: the largest answer that cannot be shortened
# (HELLO_REPLY 12 + 128 = 140 bytes; an ERROR is at most 2 + 128 = 130).
MIN_MAX_RX = HELLO_REPLY_FIXED + HELLO_REPLY_NAME_MAX


class Reason:
    """Why an answer is degraded (PREDICTION.reason); 0 for a full answer."""

    NONE = 0
    SERVER_UNAVAILABLE = 1  # not connected (down, refused, reconnecting)
    DEADLINE = 2  # no remote answer within --deadline-ms
    STREAM_BROKEN = 3  # the stream broke while the request was in flight
    MODEL_MISMATCH = 4  # the server serves a different model name/version
    SERVER_ERROR = 5  # the server answered this request with an in-band error
    NO_SERVER = 6  # the agent runs local-only by configuration
    BUDGET = 7  # the byte budget admits fewer remote channels than break-even: nothing was sent

    NAMES = {0: "none", 1: "server_unavailable", 2: "deadline", 3: "stream_broken", 4: "model_mismatch",
             5: "server_error", 6: "no_server", 7: "budget"}
    CODES = {v: k for k, v in NAMES.items()}


def _bad(message: str) -> FrameError:
    return FrameError(ErrorCode.BAD_MESSAGE, message)


def _utf8(text: str, limit: int) -> bytes:
    """text as UTF-8, cut to at most limit bytes without splitting a character."""
    return text.encode()[:limit].decode("utf-8", "ignore").encode()


def _strict_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"{what} is not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1].hex()})") from None


@dataclass(frozen=True)
class Hello:
    """MCU -> agent. The first frame after reset; may be repeated at any time."""

    flags: int = 0
    max_rx: int = 0  # largest frame payload the MCU can receive; 0: no limit announced, else >= MIN_MAX_RX
    firmware: str = ""
    version: int = PROTOCOL_VERSION
    _S = struct.Struct("<BBH")

    def pack(self) -> bytes:
        return self._S.pack(self.version, self.flags, self.max_rx) + _utf8(self.firmware, HELLO_NAME_MAX)

    @classmethod
    def parse(cls, payload: bytes) -> "Hello":
        """The payload's layout only; whether the agent speaks ``version`` is the bridge's check."""
        if len(payload) < cls._S.size or len(payload) > cls._S.size + HELLO_NAME_MAX:
            raise _bad(f"HELLO payload must be 4..68 bytes, got {len(payload)}")
        version, flags, max_rx = cls._S.unpack_from(payload)
        if flags & ~HELLO_KNOWN_FLAGS:
            raise _bad(f"HELLO flags 0x{flags:02x} set reserved bits (only bit 0, want logits, is defined)")
        if 0 < max_rx < MIN_MAX_RX:
            raise _bad(f"HELLO max_rx {max_rx} is below the minimum {MIN_MAX_RX} (0 = no limit)")
        return cls(flags, max_rx, _strict_utf8(payload[cls._S.size:], "HELLO firmware name"), version)


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
    version: int = PROTOCOL_VERSION
    _S = struct.Struct("<BBHHHHH")  # note the order C, H, W here and H, W, C in IMAGE

    def pack(self) -> bytes:
        return self._S.pack(self.version, int(self.server_connected), self.max_payload, self.channels, self.height,
                            self.width, self.num_classes) + _utf8(self.model, HELLO_REPLY_NAME_MAX)

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
        fmt, reserved, h, w, c = cls._S.unpack_from(payload)
        if fmt != IMAGE_FORMAT_RAW:
            raise _bad(f"IMAGE format {fmt} is not supported (only 0, raw uint8 HWC)")
        if reserved:
            raise _bad(f"IMAGE reserved byte is {reserved}, must be 0")
        size = h * w * c
        if len(payload) - cls._S.size != size:
            raise _bad(f"IMAGE of {h}x{w}x{c} needs {size} pixel bytes, got {len(payload) - cls._S.size}")
        return cls(np.frombuffer(payload, np.uint8, size, cls._S.size).reshape(h, w, c))


@dataclass(frozen=True)
class Features:
    """MCU -> agent (protocol version 2). The MCU ran the device part itself: its local logits and
    the coded remote features (a feature payload of docs/protocol.md, forwarded to the server as is).

    Local logits travel as the int16 the integer local predictor produced, with their scale
    (zero point 0): exactly what the device computed (no float on the MCU, nothing lost), 2 bytes
    per class instead of 4 for float32; int16 rather than int8 because 256 steps make close classes
    tie. The agent checks the scale against its bundle's integer device part, which catches a
    firmware built for another model before its payload reaches the server.

    Version 3 adds format 0 (``logits_follow``): the frame announces n logits but carries none; they
    come in the LOCAL frame with the same seq, which the MCU sends once its local predictor has run,
    while the payload is already on its way to the server.
    """

    logits_q: np.ndarray  # int16 [classes], pre-softmax; empty when logits_follow
    scale: float  # logit = scale * q
    payload: bytes  # the coded remote features (docs/protocol.md)
    # what the device part cost on the MCU (cycles, or instructions under QEMU -icount; 0: not measured),
    # with logits_follow the part up to the payload
    device_cycles: int = 0
    logits_follow: bool = False  # format 0: the logits come in a LOCAL frame
    classes: int = 0  # n, the logits announced (with logits_follow; else logits_q.size)
    _S = struct.Struct("<BBHfI")

    def __post_init__(self):
        if not self.logits_follow:
            object.__setattr__(self, "classes", int(np.asarray(self.logits_q).size))

    def pack(self) -> bytes:
        q = np.asarray(self.logits_q, dtype="<i2")
        if self.logits_follow:
            return self._S.pack(LOGITS_FOLLOW, self.classes, 0, self.scale, self.device_cycles) + bytes(self.payload)
        return (self._S.pack(LOGITS_INT16, q.size, 0, self.scale, self.device_cycles)
                + q.tobytes() + bytes(self.payload))

    @classmethod
    def parse(cls, payload: bytes, version: int = PROTOCOL_VERSION) -> "Features":
        if len(payload) < cls._S.size:
            raise _bad(f"FEATURES payload must be at least {cls._S.size} bytes, got {len(payload)}")
        fmt, n, reserved, scale, cycles = cls._S.unpack_from(payload)
        follow = fmt == LOGITS_FOLLOW and version >= 3
        if fmt != LOGITS_INT16 and not follow:
            known = f"{LOGITS_FOLLOW} (logits in LOCAL) or {LOGITS_INT16}" if version >= 3 else f"{LOGITS_INT16}"
            raise _bad(f"FEATURES logits format {fmt} is not supported in protocol version {version} (only {known})")
        if reserved:
            raise _bad(f"FEATURES reserved bytes are 0x{reserved:04x}, must be 0")
        if not (np.isfinite(scale) and scale > 0):
            raise _bad(f"FEATURES logit scale {scale} must be a positive finite float32")
        if n == 0:
            raise _bad("FEATURES announces 0 logits")
        if follow:
            return cls(np.zeros(0, np.int16), float(scale), bytes(payload[cls._S.size:]), cycles, True, n)
        if len(payload) < cls._S.size + 2 * n:
            raise _bad(f"FEATURES announces {n} logits but carries {len(payload) - cls._S.size} bytes after its header")
        q = np.frombuffer(payload, "<i2", n, cls._S.size).astype(np.int16)
        return cls(q, float(scale), bytes(payload[cls._S.size + 2 * n:]), cycles)

    def local_logits(self) -> np.ndarray:
        """float32 logits the agent merges: scale * q, computed in float32."""
        return dequantize_logits(self.logits_q, self.scale)


@dataclass(frozen=True)
class Local:
    """MCU -> agent (protocol version 3). The local logits of the FEATURES frame (format 0) with the
    same seq, int16 in that frame's scale, and what the local predictor cost on the MCU. It
    completes the request: the PREDICTION that answers it answers the FEATURES too."""

    logits_q: np.ndarray  # int16 [classes], pre-softmax
    device_cycles: int = 0  # the local predictor's cycles on the MCU (instructions under QEMU -icount); 0: not measured
    _S = struct.Struct("<BBHI")

    def pack(self) -> bytes:
        q = np.asarray(self.logits_q, dtype="<i2")
        return self._S.pack(LOGITS_INT16, q.size, 0, self.device_cycles) + q.tobytes()

    @classmethod
    def parse(cls, payload: bytes) -> "Local":
        if len(payload) < cls._S.size:
            raise _bad(f"LOCAL payload must be at least {cls._S.size} bytes, got {len(payload)}")
        fmt, n, reserved, cycles = cls._S.unpack_from(payload)
        if fmt != LOGITS_INT16:
            raise _bad(f"LOCAL logits format {fmt} is not supported (only {LOGITS_INT16}, int16)")
        if reserved:
            raise _bad(f"LOCAL reserved bytes are 0x{reserved:04x}, must be 0")
        if n == 0 or len(payload) != cls._S.size + 2 * n:
            raise _bad(f"LOCAL announces {n} logits but carries {len(payload) - cls._S.size} bytes after its header")
        return cls(np.frombuffer(payload, "<i2", n, cls._S.size).astype(np.int16), cycles)


def dequantize_logits(q: np.ndarray, scale: float) -> np.ndarray:
    """int16 logits -> float32, the same arithmetic as the Python integer device part
    (agilenn.firmware.int8.Int8DeviceModel.dequantize_logits), so both merge identical numbers."""
    return np.asarray(q, np.float32) * np.float32(scale)


FEATURES_FIXED = Features._S.size  # FEATURES payload bytes before the logits


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
        return self._S.pack(self.code, 0) + _utf8(self.detail, ERROR_DETAIL_MAX)

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
