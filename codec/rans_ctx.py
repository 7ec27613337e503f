"""Context-adaptive rANS: payload coder id 4 ("rans-ctx").

docs/protocol.md ("rans-ctx body") is the reference. The body is a `rans` body (codec/rans.py,
same state, units, bytes and strict decoder); only the table of each symbol differs. Instead of one
table per channel, symbol i (channel c, row y, column x) is coded with

    t(i) = row_map[c][ctx(i)],   ctx(i) = sum_j bins[v_j] * B^(n-1-j)   (first neighbour most significant)

where v_j is the value of the j-th neighbour named by the manifest, or ``levels`` when that
neighbour lies outside the payload:

    left   (c, y, x-1)   when x > 0
    up     (c, y-1, x)   when y > 0
    prev   (c-1, y, x)   when c > 0  (the previous remote channel, same position)

``bins`` (levels + 1 entries, the last one for "outside") merges neighbour values into B bins and
``row_map`` (channels_total x B^n entries) merges contexts into a few shared frequency rows, so the
tables stay small enough for an MCU's flash. Every neighbour precedes symbol i in coding order
(channel-major, then row-major), so the decoder, which yields symbols first to last, always knows
ctx(i) before it decodes symbol i; the encoder knows every symbol and computes all t(i) up front,
then codes last to first as rANS requires.
"""

from __future__ import annotations

import numpy as np

from .errors import PayloadError
from .native import context_coder as native_context_coder
from .rans import DecoderTables, EncoderTables, check_symbols, validate_frequencies

NEIGHBOURS = ("left", "up", "prev")
MAX_ROWS = 256  # the row map is uint8 in flash
MAX_MAP_ENTRIES = 1 << 16  # channels_total x B^n: keeps a hostile manifest from asking for a huge map


class ContextModel:
    """The manifest's ``coder.context`` for one model, validated (ValueError naming the problem)."""

    def __init__(self, context: dict, channels: int, height: int, width: int, levels: int):
        if not isinstance(context, dict):
            raise ValueError(f"coder.context must be an object, got {type(context).__name__}")
        missing = [k for k in ("neighbours", "bins", "row_map", "frequency_bits", "frequencies") if k not in context]
        if missing:
            raise ValueError(f"coder.context lacks {', '.join(missing)}")
        nb = context["neighbours"]
        if (not isinstance(nb, list) or not 1 <= len(nb) <= len(NEIGHBOURS) or len(set(map(str, nb))) != len(nb)
                or any(n not in NEIGHBOURS for n in nb)):
            raise ValueError(f"coder.context.neighbours must be distinct names from {list(NEIGHBOURS)}, got {nb!r}")
        self.neighbours = tuple(nb)
        bins = _int_array(context["bins"], "coder.context.bins")
        if bins.shape != (levels + 1,) or bins.min() < 0:
            raise ValueError(f"coder.context.bins must be {levels + 1} non-negative integers (levels, then outside)")
        self.num_bins = int(bins.max()) + 1
        if self.num_bins > 256:
            raise ValueError(f"coder.context.bins uses {self.num_bins} bins, at most 256")
        self.bins = bins
        self.contexts = self.num_bins ** len(self.neighbours)
        if channels * self.contexts > MAX_MAP_ENTRIES:
            raise ValueError(f"coder.context has {channels} x {self.contexts} contexts, more than {MAX_MAP_ENTRIES}")
        row_map = _int_array(context["row_map"], "coder.context.row_map")
        if row_map.shape != (channels, self.contexts):
            raise ValueError(f"coder.context.row_map must be [{channels}, {self.contexts}], got {list(row_map.shape)}")
        freq = np.asarray(context["frequencies"], dtype=object)
        rows = freq.shape[0] if freq.ndim >= 1 else 0
        if not 1 <= rows <= MAX_ROWS:
            raise ValueError(f"coder.context.frequencies must have 1..{MAX_ROWS} rows, got {rows}")
        self.frequencies = validate_frequencies(context["frequencies"], context["frequency_bits"], rows, levels)
        self.frequency_bits = int(context["frequency_bits"])
        if row_map.min() < 0 or row_map.max() >= rows:
            raise ValueError(f"coder.context.row_map entries must be row indices 0..{rows - 1}")
        self.row_map = row_map
        self.shape = (int(channels), int(height), int(width))
        self.levels = int(levels)
        self._rules: dict = {}  # channels_sent -> decoder rule (at most `channels` of them)

    def to_json(self) -> dict:
        return {"neighbours": list(self.neighbours), "bins": self.bins.tolist(), "row_map": self.row_map.tolist(),
                "frequency_bits": self.frequency_bits, "frequencies": self.frequencies.tolist()}

    def flash_bytes(self) -> dict:
        """Bytes of const tables in C: prepared rows (agn_rans_symbol, 12 B each), the uint8 row map
        and bins."""
        rows = self.frequencies.shape[0] * self.levels * 12
        return {"rows": rows, "row_map": int(self.row_map.size), "bins": int(self.bins.size),
                "total": rows + int(self.row_map.size) + int(self.bins.size)}

    # --- the rule --------------------------------------------------------------------------
    def contexts_of(self, symbols: np.ndarray) -> np.ndarray:
        """ctx(i) of every symbol. symbols: int [..., channels_sent, height, width] -> same shape."""
        s = np.asarray(symbols, dtype=np.int64)
        outside = self.levels
        ctx = np.zeros(s.shape, dtype=np.int64)
        for name in self.neighbours:
            v = np.full(s.shape, outside, dtype=np.int64)
            if name == "left":
                v[..., 1:] = s[..., :-1]
            elif name == "up":
                v[..., 1:, :] = s[..., :-1, :]
            else:  # prev
                v[..., 1:, :, :] = s[..., :-1, :, :]
            ctx = ctx * self.num_bins + self.bins[v]
        return ctx

    def table_index(self, symbols: np.ndarray) -> np.ndarray:
        """t(i) of every symbol: int [..., channels_sent, height, width] -> same shape."""
        ctx = self.contexts_of(symbols)
        channel = np.arange(ctx.shape[-3]).reshape(-1, 1, 1)
        return self.row_map[channel, ctx]

    def decoder_rule(self, channels_sent: int):
        """table_at(i, out) for the decoder: t(i) from the symbols decoded so far (out[:i]).

        Per position, the index of each neighbour in coding order (or a sentinel slot past the end
        that holds the "outside" value) is precomputed once per channel count and kept, so the
        per-symbol work is a few list lookups (building the lists took ~90 of a CIFAR-10 payload's
        ~490 us of decoding when it was redone for every payload)."""
        rule = self._rules.get(channels_sent)
        if rule is None:
            rule = self._rules[channels_sent] = self._build_decoder_rule(channels_sent)
        return rule

    def _build_decoder_rule(self, channels_sent: int):
        _, h, w = self.shape
        count = channels_sent * h * w
        sentinel = count  # out[count] = levels: the value of a neighbour outside the payload
        c, y, x = np.meshgrid(np.arange(channels_sent), np.arange(h), np.arange(w), indexing="ij")
        i = ((c * h + y) * w + x).reshape(-1)
        where = {"left": (x.reshape(-1) > 0, i - 1), "up": (y.reshape(-1) > 0, i - w),
                 "prev": (c.reshape(-1) > 0, i - h * w)}
        nbr = [np.where(*where[name], sentinel).tolist() for name in self.neighbours]
        base = (c.reshape(-1) * self.contexts).tolist()
        flat_map = self.row_map.reshape(-1).tolist()
        bins, radix = self.bins.tolist(), self.num_bins

        if len(nbr) == 1:
            (n0,) = nbr
            return lambda k, out: flat_map[base[k] + bins[out[n0[k]]]]
        if len(nbr) == 2:
            n0, n1 = nbr
            return lambda k, out: flat_map[base[k] + bins[out[n0[k]]] * radix + bins[out[n1[k]]]]
        n0, n1, n2 = nbr
        return lambda k, out: flat_map[base[k] + (bins[out[n0[k]]] * radix + bins[out[n1[k]]]) * radix
                                       + bins[out[n2[k]]]]


def _int_array(value, what: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} is not a rectangular array of integers: {exc}") from None
    if a.dtype.kind not in "iu" or a.size == 0:
        raise ValueError(f"{what} must be a non-empty array of integers")
    return a.astype(np.int64)


class ContextCoder:
    """Encoder and strict decoder of rans-ctx bodies for one model."""

    def __init__(self, model: ContextModel):
        self.model = model
        self._encoder = EncoderTables(model.frequencies, model.frequency_bits)
        self._decoder = DecoderTables(model.frequencies, model.frequency_bits)
        self._native = native_context_coder(model)  # the device's C coder, when built (codec/native.py)

    def encode(self, symbols: np.ndarray) -> bytes:
        """Body of one payload; symbols: int [channels_sent, height, width]."""
        s = np.asarray(symbols, dtype=np.int64)
        if self._native is not None and s.ndim == 3 and s.shape[1:] == self.model.shape[1:] \
                and s.shape[0] <= self.model.shape[0]:
            check_symbols(s, self.model.levels)
            return self._native.encode(s)
        return self._encoder.encode(s.reshape(-1), self.model.table_index(s).reshape(-1))

    def encode_batch(self, symbols: np.ndarray) -> list[bytes]:
        """Bodies of N payloads at once; symbols: int [N, channels_sent, height, width]."""
        s = np.asarray(symbols, dtype=np.int64)
        n = s.shape[0]
        return self._encoder.encode_batch(s.reshape(n, -1), self.model.table_index(s).reshape(n, -1))

    def decode(self, body: bytes, channels_sent: int) -> np.ndarray:
        """uint8 [channels_sent, height, width]; PayloadError unless body is exactly their encoding."""
        _, h, w = self.model.shape
        if self._native is not None:
            symbols = self._native.decode(bytes(body), channels_sent)
            if symbols is not None:
                return symbols.reshape(channels_sent, h, w)
            # refused: the Python decoder refuses it too and names the problem (codec/native.py)
        count = channels_sent * h * w
        out = self._decoder.decode_adaptive(body, count, self.model.decoder_rule(channels_sent),
                                            outside=self.model.levels)
        return out.reshape(channels_sent, h, w)


__all__ = ["ContextCoder", "ContextModel", "NEIGHBOURS", "PayloadError"]
