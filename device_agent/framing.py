"""Serial frames between an MCU and the agent: COBS-stuffed, 0x00-delimited, CRC-32 checked.

docs/serial-protocol.md is the reference (byte layouts, worked example, resynchronisation); this
module is its Python implementation and nothing here may disagree with it.

A frame before stuffing (all integers little-endian):

    offset  size  field
    0       1     protocol version (1, 2 or 3; answers carry the version of the frame they answer)
    1       1     message type
    2       2     seq        chosen by the MCU, echoed in the answer
    4       2     length L   of the payload, at most MAX_PAYLOAD
    6       L     payload
    6+L     4     CRC-32 (IEEE 802.3, zlib.crc32) of bytes 0 .. 6+L-1

On the wire: 0x00, COBS(frame), 0x00. The leading delimiter closes whatever line noise came before,
so noise costs at most one error answer and never the next good frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# version 2 adds FEATURES (the MCU runs the device part itself); version 3 lets its local logits follow
# in a LOCAL frame, so the payload goes out before the local predictor runs
PROTOCOL_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)  # an MCU of an older version keeps working unchanged
DELIMITER = 0x00

# 64x64x3 images (Tiny ImageNet) plus the image header must fit; small enough for a 20 KB buffer.
MAX_PAYLOAD = 16384
HEADER = struct.Struct("<BBHH")
CRC = struct.Struct("<I")
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size
# COBS adds one byte per started 254-byte block.
MAX_ENCODED = MAX_FRAME + (MAX_FRAME + 253) // 254

SEQ_NONE = 0xFFFF  # seq of an error answer to a frame whose own seq could not be trusted; never an MCU's seq


class MsgType:
    HELLO = 0x01
    IMAGE = 0x02
    FEATURES = 0x03  # protocol version 2 and later
    LOCAL = 0x04  # protocol version 3 and later: the local logits of the FEATURES with the same seq
    HELLO_REPLY = 0x81
    PREDICTION = 0x82
    ERROR = 0x83

    NAMES = {0x01: "HELLO", 0x02: "IMAGE", 0x03: "FEATURES", 0x04: "LOCAL", 0x81: "HELLO_REPLY", 0x82: "PREDICTION",
             0x83: "ERROR"}


class FrameError(ValueError):
    """A received chunk that is not a valid frame. ``code`` is the ErrorCode to answer with."""

    def __init__(self, code: int, message: str, seq: int = 0xFFFF):
        super().__init__(message)
        self.code = code
        self.seq = seq  # SEQ_NONE unless the frame's CRC held


class ErrorCode:
    BAD_FRAME = 1  # COBS, length or CRC check failed: the seq is unknown
    TOO_LONG = 2  # more than MAX_ENCODED bytes without a delimiter
    BAD_VERSION = 3
    UNKNOWN_TYPE = 4
    BAD_MESSAGE = 5  # a valid frame whose payload does not parse (e.g. image of the wrong shape, len > MAX_PAYLOAD)
    INTERNAL = 6
    # version 3: a LOCAL whose FEATURES the agent does not hold (lost or corrupted on the line): the
    # MCU sends both again, so a damaged FEATURES costs a retransmission, not the remote answer
    MISSING_FEATURES = 7

    NAMES = {1: "BAD_FRAME", 2: "TOO_LONG", 3: "BAD_VERSION", 4: "UNKNOWN_TYPE", 5: "BAD_MESSAGE", 6: "INTERNAL",
             7: "MISSING_FEATURES"}


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION

    @property
    def type_name(self) -> str:
        return MsgType.NAMES.get(self.type, f"0x{self.type:02x}")


# --- COBS (Cheshire & Baker, 1999) -------------------------------------------------------------
def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the output holds no 0x00 byte."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError(ErrorCode.BAD_FRAME, f"COBS: zero byte at offset {i}")
        end = i + code
        if end > n:
            raise FrameError(ErrorCode.BAD_FRAME, f"COBS: block at offset {i} runs past the end ({code - 1} > {n - i - 1})")
        block = data[i + 1:end]
        if 0 in block:
            raise FrameError(ErrorCode.BAD_FRAME, "COBS: zero byte inside a block")
        out += block
        i = end
        # A 255 code means "254 data bytes, no zero follows"; the last block implies no zero either.
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


# --- frames -------------------------------------------------------------------------------------
def pack_frame(frame: Frame) -> bytes:
    """The frame as it goes on the wire, delimiters included."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    if frame.version not in SUPPORTED_VERSIONS:
        raise ValueError(f"protocol version {frame.version} is not one of {SUPPORTED_VERSIONS}")
    body = HEADER.pack(frame.version, frame.type, frame.seq & 0xFFFF, len(frame.payload)) + bytes(frame.payload)
    body += CRC.pack(zlib.crc32(body))
    return b"\x00" + cobs_encode(body) + b"\x00"


def unpack_frame(chunk: bytes) -> Frame:
    """Decode one chunk (the bytes between two delimiters); raise FrameError if it is not a frame."""
    raw = cobs_decode(chunk)
    if len(raw) < HEADER.size + CRC.size:
        raise FrameError(ErrorCode.BAD_FRAME, f"frame of {len(raw)} bytes is shorter than header + CRC")
    (crc,) = CRC.unpack_from(raw, len(raw) - CRC.size)
    if zlib.crc32(raw[: -CRC.size]) != crc:
        raise FrameError(ErrorCode.BAD_FRAME, "CRC mismatch")
    version, mtype, seq, length = HEADER.unpack_from(raw)
    if length != len(raw) - HEADER.size - CRC.size:
        raise FrameError(ErrorCode.BAD_FRAME, f"length field {length} disagrees with the frame ({len(raw) - 10} payload bytes)")
    # The CRC held from here on, so the seq is trustworthy and the errors can name it.
    if version not in SUPPORTED_VERSIONS:
        spoken = f"{', '.join(map(str, SUPPORTED_VERSIONS[:-1]))} and {SUPPORTED_VERSIONS[-1]}"
        raise FrameError(ErrorCode.BAD_VERSION, f"protocol version {version}, this agent speaks {spoken}", seq)
    if length > MAX_PAYLOAD:
        # A zero-rich frame stuffs to fewer bytes than MAX_ENCODED even with a longer payload.
        raise FrameError(ErrorCode.BAD_MESSAGE, f"payload of {length} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}", seq)
    return Frame(mtype, seq, raw[HEADER.size: len(raw) - CRC.size], version)


class FrameReader:
    """Incremental receiver: feed() any bytes, get back frames and FrameErrors in arrival order.

    Empty chunks (two delimiters in a row) are ignored silently; they are how a sender resyncs.
    A chunk longer than MAX_ENCODED is dropped up to the next delimiter and reported once.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED):
        self.max_encoded = max_encoded
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list:
        events: list = []
        start = 0
        while start <= len(data):
            end = data.find(b"\x00", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                self._buf += piece
                if len(self._buf) > self.max_encoded:
                    self._overflow = True
                    self._buf.clear()
                    events.append(FrameError(ErrorCode.TOO_LONG, f"more than {self.max_encoded} bytes without a delimiter"))
            if end < 0:
                break
            if not self._overflow and self._buf:
                chunk = bytes(self._buf)
                try:
                    events.append(unpack_frame(chunk))
                except FrameError as exc:
                    events.append(exc)
            self._buf.clear()
            self._overflow = False
            start = end + 1
        return events

    @property
    def pending(self) -> int:
        """Bytes of an unfinished chunk held so far."""
        return len(self._buf)
