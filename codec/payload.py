"""The feature payload that travels from device to server: a short header, then the coder's body.

Two header versions (docs/protocol.md is the reference; the receiver reads both):

Version 2, "compact" (what every encoder here writes; 3 bytes below 128 remote channels):

    offset size field
    0      1    0xA0 | coder id (0 raw, 1 zstd, 2 ans, 3 rans, 4 rans-ctx)
    1      1    model check: the low byte of CRC-32 over the model fields version 1 spells out
                (levels - 1 as u8, channels_total, height, width as little-endian u16)
    2      1-3  channels_sent, unsigned LEB128 (one byte below 128)
    ...         body

Version 1, self-describing (13 bytes; what devices built before 2026-11-27 send):

    0      2    magic  b"AG"
    2      1    version (1)
    3      1    coder id
    4      1    levels - 1 (number of centroids minus one)
    5      2    channels_total  remote channels of the model (C - k)
    7      2    channels_sent   leading remote channels present; the receiver zero-fills the rest
    9      2    height
    11     2    width
    13     ...  body: channels_sent x height x width centroid indices, channel-major, coded

Why version 2: the model fields are the receiver's own (its manifest), yet version 1 spelt them out
(7 bytes) beside a 3-byte magic and version on every inference; version 2 saves 10 bytes, at
270 kbps 0.3 ms of air time on every request. The
check byte keeps the check (a payload built for another model is refused with the fields named,
except for a 1-in-256 collision), and the stream's ModelRef names the model anyway.

A sender under a byte budget drops the least important (trailing) remote channels; training orders
remote channels by importance and teaches the remote NN to live with the truncation.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from .coders import CODER_BY_ID, CODER_NAMES, make_coder
from .errors import PayloadError
from .quantize import dequantize, quantize, validate_centroids
from .rans import validate_frequencies
from .rans_ctx import ContextModel

MAGIC = b"AG"  # version 1's first two bytes
VERSION_SELF_DESCRIBING = 1
VERSION_COMPACT = 2
VERSION = VERSION_COMPACT  # what encoders write unless told otherwise
_HEADER_V1 = struct.Struct("<2sBBBHHHH")
HEADER_SIZE_V1 = _HEADER_V1.size  # 13
COMPACT_TAG = 0xA0  # version 2's first byte is COMPACT_TAG | coder id; version 1's is 0x41 ('A')
_MAX_CHANNELS = (1 << 16) - 1
_CODER_IDS = {name: coder_id for coder_id, name in CODER_BY_ID.items()}


def _leb128(n: int) -> bytes:
    # Unsigned LEB128, written here: three lines, and no library for it is among our dependencies.
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def header_size(channels_sent: int, version: int = VERSION) -> int:
    """Bytes of the header in front of a body of ``channels_sent`` channels."""
    return HEADER_SIZE_V1 if version == VERSION_SELF_DESCRIBING else 2 + len(_leb128(channels_sent))


def model_check(levels: int, channels_total: int, height: int, width: int) -> int:
    """Version 2's check byte: the low byte of CRC-32 over version 1's model fields, packed as there."""
    fields = struct.pack("<BHHH", levels - 1, channels_total, height, width)
    return zlib.crc32(fields) & 0xFF


@dataclass(frozen=True)
class PayloadHeader:
    version: int
    coder: str
    channels_sent: int
    size: int  # header bytes; the body starts here
    # Version 1 spells out the model fields; version 2 carries only their check byte.
    levels: int | None = None
    channels_total: int | None = None
    height: int | None = None
    width: int | None = None
    model_check: int | None = None


def _parse_v1(payload) -> PayloadHeader:
    if len(payload) < HEADER_SIZE_V1:
        raise PayloadError(f"truncated payload: {len(payload)} bytes, a version-1 header alone is {HEADER_SIZE_V1}")
    magic, version, coder_id, levels_m1, total, sent, height, width = _HEADER_V1.unpack_from(payload)
    if magic != MAGIC:
        raise PayloadError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}: not an AgileNN feature payload")
    if version != VERSION_SELF_DESCRIBING:
        raise PayloadError(f"unsupported payload version {version} after the magic {MAGIC!r} "
                           f"(this build reads versions 1 and 2)")
    if coder_id not in CODER_BY_ID:
        raise PayloadError(f"unknown coder id {coder_id} (known: {sorted(CODER_BY_ID)})")
    if sent > total:
        raise PayloadError(f"payload claims {sent} channels sent of only {total}")
    return PayloadHeader(version, CODER_BY_ID[coder_id], sent, HEADER_SIZE_V1,
                         levels=levels_m1 + 1, channels_total=total, height=height, width=width)


def _parse_v2(payload) -> PayloadHeader:
    coder_id = payload[0] & 0x0F
    if coder_id not in CODER_BY_ID:
        raise PayloadError(f"unknown coder id {coder_id} in the compact header's first byte "
                           f"0x{payload[0]:02x} (known: {sorted(CODER_BY_ID)})")
    if len(payload) < 3:
        raise PayloadError(f"truncated payload: {len(payload)} bytes, a compact header is at least 3")
    sent, shift, at = 0, 0, 2
    while True:
        if at >= len(payload):
            raise PayloadError("truncated payload: channels_sent (LEB128) runs past its end")
        byte = payload[at]
        sent |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            break
        shift += 7
        if shift > 14:
            raise PayloadError("channels_sent (LEB128) is longer than 3 bytes")
    if sent > _MAX_CHANNELS or at != 2 + len(_leb128(sent)):
        # one spelling per number, so that every payload has one encoding (docs/protocol.md)
        raise PayloadError(f"channels_sent {sent} is not in its shortest LEB128 form or above {_MAX_CHANNELS}")
    return PayloadHeader(VERSION_COMPACT, CODER_BY_ID[coder_id], sent, at, model_check=payload[1])


def parse_header(payload: bytes) -> PayloadHeader:
    """Read and sanity-check the header alone (no model needed; FeatureCodec.check_header checks the rest)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) == 0:
        raise PayloadError("truncated payload: empty, not even a header")
    first = payload[0]
    if first & 0xF0 == COMPACT_TAG:
        return _parse_v2(payload)
    if first == MAGIC[0]:
        return _parse_v1(payload)
    raise PayloadError(f"bad first byte 0x{first:02x}: not an AgileNN feature payload "
                       f"(version 2 starts with 0xa0-0xa4, version 1 with {MAGIC!r})")


@dataclass(frozen=True)
class DecodedFeatures:
    features: np.ndarray  # float32 [channels_total, height, width], zero-filled past channels_sent
    indices: np.ndarray  # uint8 [channels_sent, height, width]
    header: PayloadHeader


class FeatureCodec:
    """Quantize + code remote features for one model (its centroids, shapes and symbol tables).

    Both ends build it from the same manifest, so every size a decoder needs is known before it
    reads a single payload byte, and a payload that disagrees with the model is rejected.
    """

    def __init__(
        self,
        centroids,
        channels: int,
        height: int,
        width: int,
        symbol_probabilities=None,
        default_coder: str = "ans",
        zstd_level: int = 19,
        frequencies=None,
        frequency_bits: int | None = None,
        context: dict | None = None,
        payload_version: int = VERSION,
    ):
        self.centroids = validate_centroids(centroids)
        self.levels = int(self.centroids.size)
        if not (0 < channels < 1 << 16 and 0 < height < 1 << 16 and 0 < width < 1 << 16):
            raise ValueError(f"feature shape {(channels, height, width)} does not fit the payload header")
        self.shape = (int(channels), int(height), int(width))
        if payload_version not in (VERSION_SELF_DESCRIBING, VERSION_COMPACT):
            raise ValueError(f"payload_version must be 1 or 2, got {payload_version}")
        self.payload_version = int(payload_version)
        self.model_check = model_check(self.levels, *self.shape)
        self.probabilities = None
        if symbol_probabilities is not None:
            p = np.asarray(symbol_probabilities, dtype=np.float64)
            if p.shape != (channels, self.levels):
                raise ValueError(f"symbol_probabilities must be [{channels}, {self.levels}], got {list(p.shape)}")
            if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
                raise ValueError("symbol_probabilities must be finite, non-negative, with a positive sum per channel")
            self.probabilities = p / p.sum(axis=1, keepdims=True)
        # The rans coder's integer tables (one per remote channel), exactly as stored in the manifest.
        self.frequencies, self.frequency_bits = None, None
        if frequencies is not None or frequency_bits is not None:
            if frequencies is None or frequency_bits is None:
                raise ValueError("frequencies and frequency_bits come together (both or neither)")
            self.frequencies = validate_frequencies(frequencies, frequency_bits, channels, self.levels)
            self.frequency_bits = int(frequency_bits)
        # The rans-ctx coder's context rule and tables (manifest coder.context), validated here.
        self.context = None if context is None else ContextModel(context, channels, height, width, self.levels)
        if default_coder not in CODER_NAMES:
            raise ValueError(f"unknown coder {default_coder!r}; choose one of {', '.join(CODER_NAMES)}")
        available = {"raw", "zstd"}
        if self.probabilities is not None:
            available.add("ans")
        if self.frequencies is not None:
            available.add("rans")
        if self.context is not None:
            available.add("rans-ctx")
        self.default_coder = default_coder
        self._coders = {
            name: make_coder(name, zstd_level, self.frequencies, self.frequency_bits, self.context)
            for name in CODER_NAMES if name in available
        }

    @classmethod
    def from_manifest(cls, manifest: dict, payload_version: int = VERSION) -> "FeatureCodec":
        feats = manifest["features"]
        coder = manifest.get("coder", {})
        return cls(
            centroids=manifest["quantizer"]["centroids"],
            channels=feats["channels"] - feats["k"],
            height=feats["height"],
            width=feats["width"],
            symbol_probabilities=coder.get("symbol_probabilities"),
            default_coder=coder.get("default", "ans"),
            zstd_level=coder.get("zstd_level", 19),
            frequencies=coder.get("frequencies"),
            frequency_bits=coder.get("frequency_bits"),
            context=coder.get("context"),
            payload_version=payload_version,
        )

    @property
    def available_coders(self) -> tuple[str, ...]:
        """Coders this model can use (ans, rans and rans-ctx need the manifest's tables), in CODER_NAMES order."""
        return tuple(name for name in CODER_NAMES if name in self._coders)

    def _coder(self, name: str | None):
        name = name or self.default_coder
        if name not in self._coders:
            tables = {"ans": "coder.symbol_probabilities", "rans": "coder.frequencies", "rans-ctx": "coder.context"}
            raise PayloadError(f"coder {name!r} is not available for this model (no {tables[name]} in its manifest)"
                               if name in tables else f"unknown coder {name!r}")
        return self._coders[name]

    # --- sender -----------------------------------------------------------------------------
    def quantize(self, features: np.ndarray) -> np.ndarray:
        """Centroid indices of one sample [C, h, w] or a batch [N, C, h, w]."""
        features = np.asarray(features)
        if features.shape[-3:] != self.shape or features.ndim not in (3, 4):
            raise ValueError(f"features must be {list(self.shape)} or [N, *{list(self.shape)}], got {list(features.shape)}")
        return quantize(features, self.centroids)

    def encode_indices(self, indices: np.ndarray, coder: str | None = None, channels_sent: int | None = None) -> bytes:
        indices = np.asarray(indices)
        if indices.shape != self.shape:
            raise ValueError(f"indices must be {list(self.shape)}, got {list(indices.shape)}")
        total, height, width = self.shape
        sent = total if channels_sent is None else int(channels_sent)
        if not 0 <= sent <= total:
            raise ValueError(f"channels_sent must be in 0..{total}, got {sent}")
        c = self._coder(coder)
        symbols = indices[:sent].reshape(sent, height * width).astype(np.uint8)
        if symbols.size and int(symbols.max()) >= self.levels:
            raise ValueError(f"index {int(symbols.max())} out of range for {self.levels} levels")
        body = c.encode(symbols, self.levels, self.probabilities)
        return self._header(c.coder_id, sent) + body

    def _header(self, coder_id: int, sent: int) -> bytes:
        total, height, width = self.shape
        if self.payload_version == VERSION_SELF_DESCRIBING:
            return _HEADER_V1.pack(MAGIC, VERSION_SELF_DESCRIBING, coder_id, self.levels - 1, total, sent, height, width)
        return bytes((COMPACT_TAG | coder_id, self.model_check)) + _leb128(sent)

    def reheader(self, payload: bytes, header: PayloadHeader | None = None) -> bytes:
        """The payload with this codec's header version in front of the same body: how an agent
        talks to a server that reads only version 1 while its MCU writes version 2, or the other way
        round. ``header``: read_header(payload), when the caller has it already."""
        header = self.read_header(payload) if header is None else header
        if header.version == self.payload_version:
            return bytes(payload)
        return self._header(_CODER_IDS[header.coder], header.channels_sent) + bytes(payload[header.size:])

    def encode(self, features: np.ndarray, coder: str | None = None, channels_sent: int | None = None) -> bytes:
        return self.encode_indices(self.quantize(features), coder, channels_sent)

    def encode_within(self, indices: np.ndarray, max_bytes: int | None, coder: str | None = None) -> tuple[bytes, int]:
        """The payload with the most leading channels that fits in max_bytes, and that channel count.

        Channels are dropped from the end (least important first). Even zero channels costs the
        header, so a budget below header_size(0) is an error.
        """
        total = self.shape[0]
        payload = self.encode_indices(indices, coder, total)
        if max_bytes is None or len(payload) <= max_bytes:
            return payload, total
        smallest = header_size(0, self.payload_version)
        if max_bytes < smallest:
            raise ValueError(f"a byte budget of {max_bytes} is below the {smallest}-byte payload header")
        # Payload size grows with channels sent, so bisect for the largest count that fits.
        lo, hi = 0, total - 1  # invariant: lo fits (the header alone), total does not
        best = self.encode_indices(indices, coder, 0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            candidate = self.encode_indices(indices, coder, mid)
            if len(candidate) <= max_bytes:
                lo, best = mid, candidate
            else:
                hi = mid - 1
        return best, lo

    # --- receiver ---------------------------------------------------------------------------
    def check_header(self, header: PayloadHeader) -> None:
        """PayloadError naming the difference when a parsed header does not belong to this model."""
        total, height, width = self.shape
        if header.version == VERSION_SELF_DESCRIBING:
            if (header.channels_total, header.height, header.width) != self.shape:
                raise PayloadError(
                    f"payload shape {[header.channels_total, header.height, header.width]} does not match "
                    f"the model's remote features {list(self.shape)}"
                )
            if header.levels != self.levels:
                raise PayloadError(f"payload uses {header.levels} quantization levels, the model {self.levels}")
            return
        if header.model_check != self.model_check:
            raise PayloadError(
                f"payload model check 0x{header.model_check:02x} does not match the model's 0x{self.model_check:02x} "
                f"({self.levels} levels, remote features {list(self.shape)}): built for another model"
            )
        if header.channels_sent > total:
            raise PayloadError(f"payload claims {header.channels_sent} channels sent of the model's {total}")

    def read_header(self, payload: bytes) -> PayloadHeader:
        """The payload's header, checked against this model (PayloadError naming what differs), with
        the model fields version 2 leaves out filled in from the model."""
        header = parse_header(payload)
        self.check_header(header)
        total, height, width = self.shape
        return replace(header, levels=self.levels, channels_total=total, height=height, width=width)

    def decode_indices(self, payload: bytes) -> tuple[np.ndarray, PayloadHeader]:
        """The centroid indices of the channels sent, and the header with the model's fields filled in."""
        header = self.read_header(payload)
        _, height, width = self.shape
        body = bytes(payload[header.size:])
        symbols = self._coder(header.coder).decode(
            body, header.channels_sent, height * width, self.levels, self.probabilities
        )
        return symbols.reshape(header.channels_sent, height, width), header

    def decode(self, payload: bytes) -> DecodedFeatures:
        """Dequantized remote features, zero-filled past the channels the sender kept."""
        indices, header = self.decode_indices(payload)
        features = np.zeros(self.shape, dtype=np.float32)
        features[: header.channels_sent] = dequantize(indices, self.centroids)
        return DecodedFeatures(features, indices, header)
