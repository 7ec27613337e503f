"""Symbol coders: turn a [channels, positions] array of centroid indices into bytes and back.

Every coder gets the same arguments, so the payload layer can pick one by id:
- ``ans``: rANS (constriction) under a static per-channel categorical model measured in training;
  close to the order-0 entropy, the default.
- ``zstd``: one byte per symbol, zstd-compressed; needs no model, a general fallback.
- ``raw``: fixed-width bit packing; no model, no compression, the baseline.
- ``rans``: rANS specified to the bit (codec/rans.py, docs/protocol.md) under the manifest's integer
  per-channel frequency tables; what a C encoder on the device writes.
- ``rans-ctx``: the same rANS body, each symbol's table chosen from already-coded neighbours
  (codec/rans_ctx.py, the manifest's ``coder.context``); the smallest payloads.

Decoders see hostile input: they must raise PayloadError (never crash, hang or allocate without bound).
All sizes they are given come from the model, never from the payload.
"""

from __future__ import annotations

import math

import numpy as np
import zstandard

from .errors import PayloadError


def bits_per_symbol(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels)))


class Coder:
    """Interface. ``symbols`` is uint8 [channels, positions]; ``probabilities`` float64 [channels, levels]."""

    name: str = ""
    coder_id: int = -1
    needs_model: bool = False

    def encode(self, symbols: np.ndarray, levels: int, probabilities: np.ndarray | None) -> bytes:
        raise NotImplementedError

    def decode(
        self, body: bytes, channels: int, positions: int, levels: int, probabilities: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError


class RawCoder(Coder):
    name, coder_id = "raw", 0

    def encode(self, symbols, levels, probabilities=None):
        bits = bits_per_symbol(levels)
        flat = symbols.reshape(-1).astype(np.uint8)
        # LSB-first bit planes of every symbol, then packed 8 to a byte.
        planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
        return np.packbits(planes.reshape(-1), bitorder="little").tobytes()

    def decode(self, body, channels, positions, levels, probabilities=None):
        bits = bits_per_symbol(levels)
        n = channels * positions
        expected = (n * bits + 7) // 8
        if len(body) != expected:
            raise PayloadError(f"raw body is {len(body)} bytes, expected {expected} for {n} symbols of {bits} bits")
        if (n * bits) % 8 and body[-1] >> ((n * bits) % 8):
            raise PayloadError("raw body has nonzero padding bits after the last symbol")
        planes = np.unpackbits(np.frombuffer(body, dtype=np.uint8), bitorder="little", count=n * bits)
        weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
        symbols = (planes.reshape(n, bits).astype(np.uint16) * weights).sum(axis=1)
        if n and int(symbols.max()) >= levels:
            raise PayloadError(f"raw body holds symbol {int(symbols.max())}, but the model has {levels} levels")
        return symbols.astype(np.uint8).reshape(channels, positions)


class ZstdCoder(Coder):
    name, coder_id = "zstd", 1

    def __init__(self, level: int = 19):
        self.level = level

    def encode(self, symbols, levels, probabilities=None):
        # write_content_size lets the decoder reject a frame that claims more than the model allows.
        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True, write_checksum=False)
        return compressor.compress(symbols.astype(np.uint8).tobytes())

    def decode(self, body, channels, positions, levels, probabilities=None):
        n = channels * positions
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise PayloadError(f"zstd body is not a zstd frame: {exc}") from None
        if declared != n:
            raise PayloadError(f"zstd frame declares {declared} bytes of content, expected {n}")
        try:
            # max_output_size caps the allocation even if the frame header lies (zstd bombs);
            # allow_extra_data=False: exactly one frame, nothing after it (a second frame or junk is rejected).
            data = zstandard.ZstdDecompressor().decompress(body, max_output_size=n, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise PayloadError(f"zstd body does not decompress: {exc}") from None
        if len(data) != n:
            raise PayloadError(f"zstd body decompressed to {len(data)} bytes, expected {n}")
        symbols = np.frombuffer(data, dtype=np.uint8)
        if n and int(symbols.max()) >= levels:
            raise PayloadError(f"zstd body holds symbol {int(symbols.max())}, but the model has {levels} levels")
        return symbols.reshape(channels, positions).copy()


class AnsCoder(Coder):
    """rANS from constriction, one categorical model per channel (shared by its positions)."""

    name, coder_id = "ans", 2
    needs_model = True

    def __init__(self):
        import constriction

        self._stream = constriction.stream
        # perfect=False: a symbol with (near) zero training probability still gets a tiny one, so
        # any index can be encoded and the tables need not be exact.
        self._family = constriction.stream.model.Categorical(perfect=False)

    def _per_symbol_tables(self, probabilities, channels, positions):
        if probabilities is None:
            raise PayloadError("the ans coder needs the model's symbol probability tables")
        return np.repeat(np.asarray(probabilities[:channels], dtype=np.float64), positions, axis=0)

    def encode(self, symbols, levels, probabilities):
        channels, positions = symbols.shape
        if channels * positions == 0:
            return b""
        coder = self._stream.stack.AnsCoder()
        coder.encode_reverse(
            symbols.reshape(-1).astype(np.int32), self._family, self._per_symbol_tables(probabilities, channels, positions)
        )
        words = coder.get_compressed().astype("<u4").tobytes()
        # The last word is never zero (constriction's invariant), so its high zero bytes can be dropped
        # on the air and restored by zero-padding; saves ~1.5 bytes a payload.
        return words.rstrip(b"\x00")

    def decode(self, body, channels, positions, levels, probabilities):
        n = channels * positions
        if n == 0:
            if body:
                raise PayloadError(f"ans body has {len(body)} bytes but no symbols were sent")
            return np.zeros((channels, positions), dtype=np.uint8)
        # No real encoding needs more than 32 bits per symbol, even for the least likely symbol.
        # (An empty body is legitimate: a few very likely symbols fit in the coder's initial state.)
        if len(body) > 4 * n + 8:
            raise PayloadError(f"ans body of {len(body)} bytes is impossible for {n} symbols")
        padded = body + b"\x00" * (-len(body) % 4)
        words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
        try:
            coder = self._stream.stack.AnsCoder(words)
            symbols = coder.decode(self._family, self._per_symbol_tables(probabilities, channels, positions))
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise PayloadError(f"ans body does not decode: {exc}") from None
        if not coder.is_empty():
            raise PayloadError("ans body has data left over after the last symbol (corrupt or wrong model)")
        symbols = np.asarray(symbols, dtype=np.uint8).reshape(channels, positions)
        # Exactness: is_empty() only says the state is back to constriction's initial one; a body cut
        # to nothing, or with an extra zero byte, can still pass it and decode to wrong symbols. The
        # encoder is deterministic, so the one valid body for these symbols is their encoding:
        # re-encode and compare (costs about one more decode).
        if self.encode(symbols, levels, probabilities) != body:
            raise PayloadError(f"ans body of {len(body)} bytes is not the encoding of the {n} symbols it decodes to "
                               "(truncated, padded or corrupt)")
        return symbols


class RansCoder(Coder):
    """codec/rans.py with order-0 tables: symbol (channel c, position j) is coded with table c.

    The tables are the manifest's integer ``coder.frequencies``, fixed when the coder is made, so
    ``probabilities`` is not used. Decode tables are built once per model, not per payload.
    """

    name, coder_id = "rans", 3
    needs_model = True

    def __init__(self, frequencies, precision: int):
        from . import rans

        self._rans = rans
        self.frequencies = np.asarray(frequencies, dtype=np.int64)
        self.precision = int(precision)
        self._encoder = rans.EncoderTables(self.frequencies, self.precision)
        self._decoder = rans.DecoderTables(self.frequencies, self.precision)

    @staticmethod
    def table_index(channels: int, positions: int) -> np.ndarray:
        """Order 0: every symbol of channel c is coded with table c."""
        return np.repeat(np.arange(channels, dtype=np.int64), positions)

    def encode(self, symbols, levels, probabilities=None):
        channels, positions = symbols.shape
        return self._encoder.encode(symbols.reshape(-1), self.table_index(channels, positions))

    def decode(self, body, channels, positions, levels, probabilities=None):
        symbols = self._decoder.decode(body, self.table_index(channels, positions))
        return symbols.reshape(channels, positions)


class RansCtxCoder(Coder):
    """codec/rans_ctx.py: rans bodies whose tables follow the already-coded neighbours."""

    name, coder_id = "rans-ctx", 4
    needs_model = True

    def __init__(self, context_model):
        from .rans_ctx import ContextCoder

        self.model = context_model
        self._coder = ContextCoder(context_model)

    def encode(self, symbols, levels, probabilities=None):
        channels = symbols.shape[0]
        return self._coder.encode(symbols.reshape(channels, *self.model.shape[1:]))

    def decode(self, body, channels, positions, levels, probabilities=None):
        return self._coder.decode(body, channels).reshape(channels, positions)


CODER_NAMES = ("ans", "rans", "rans-ctx", "zstd", "raw")


def make_coder(name: str, zstd_level: int = 19, frequencies=None, frequency_bits: int | None = None,
               context_model=None) -> Coder:
    if name == "ans":
        return AnsCoder()
    if name == "rans":
        if frequencies is None or frequency_bits is None:
            raise ValueError("the rans coder needs the model's integer frequency tables (coder.frequencies)")
        return RansCoder(frequencies, frequency_bits)
    if name == "rans-ctx":
        if context_model is None:
            raise ValueError("the rans-ctx coder needs the model's context tables (coder.context)")
        return RansCtxCoder(context_model)
    if name == "zstd":
        return ZstdCoder(zstd_level)
    if name == "raw":
        return RawCoder()
    raise ValueError(f"unknown coder {name!r}; choose one of {', '.join(CODER_NAMES)}")


CODER_BY_ID = {0: "raw", 1: "zstd", 2: "ans", 3: "rans", 4: "rans-ctx"}
