"""rANS specified to the bit: the portable entropy coder of payload coder id 3 ("rans").

docs/protocol.md ("rans body") is the reference; this module is its Python implementation and the
C coder firmware/csrc/agn_rans.c is the other. Nothing here may disagree with that page.

The coder only sees integers: symbols, the index of the table each symbol is coded with, and
integer frequency tables whose rows sum to ``1 << precision``. How symbols map to tables is the
caller's business (order 0: one table per remote channel; a context-adaptive coder picks the table
from already-coded neighbours).

    state      x, unsigned 32-bit; the decoder starts from x = 0 and must end in x = 0
    tables     freq[t][s] >= 1, sum_s freq[t][s] == M = 2**precision (1 <= precision <= 16)
               start[t][s] = freq[t][0] + ... + freq[t][s-1]
    encode s   (symbols in reverse order) if x >= freq << (32 - precision): emit x & 0xFFFF, x >>= 16
               x = (x // freq) * M + x % freq + start
    flush      emit x & 0xFFFF, x >>= 16 while x > 0 (at most two units)
    body       the units in the reverse order of emission, each a little-endian uint16, except that
               the first unit is one byte when its value is below 256
    decode     x = 0; read units while x < 2**16 and units remain (x = x << 16 | unit); then per
               symbol: slot = x % M; s such that start <= slot < start + freq;
               x = freq * (x >> precision) + slot - start; if x < 2**16 and units remain: read one.

Why 16-bit units with a 32-bit state: every frequency then satisfies freq << (32 - precision) >=
2**16, so the encoder never emits while x < 2**16. That lets the state start at 0 (nothing to flush
for a run of likely symbols at the end, and the final state costs 0..4 bytes rather than a fixed 4)
with a decoder rule that needs no flag: read while x < 2**16 *and* units remain. (Byte-wise
renormalisation would need every freq >= M / 256, too coarse for the rare symbols.)

Why hand-written rather than constriction: constriction's Python API offers only a 64-bit state
with 32-bit words and quantizes float probabilities itself, so it cannot take our integer tables
nor produce a 32-bit-state stream a Cortex-M writes cheaply. The encoder below is vectorised across
payloads (all payloads of one call share the symbol count); the decoder is a scalar loop because
rANS decoding is inherently sequential within one payload. Where the device's C coder was built
(codec/native.py), single payloads are encoded and decoded by it instead, with the same bytes and
symbols; this module stays the reference and the fallback.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from .errors import PayloadError
from .native import tables as native_tables

STATE_BITS = 32
UNIT_BITS = 16
LOW = 1 << UNIT_BITS  # renormalisation bound: after a read the decoder's state is >= LOW
MAX_PRECISION = 16
# Table precision that training's export writes. Measured on the shipped Fashion-MNIST bundle (10k
# test images, body / order-0 entropy): 8 bits 1.009, 10: 1.010, 12: 1.012, 14: 1.014, 16: 1.018;
# coarser tables lose little here because x >= 2**16 >> M keeps rANS's own overhead small. 12 bits
# leave room for rarer symbols (the smallest probability is 1/4096; the shipped bundle has 1e-4)
# and for the skewed conditional tables of a context coder, at 2 bytes per entry in flash.
DEFAULT_PRECISION = 12
UNIT_MASK = (1 << UNIT_BITS) - 1


# --- tables ----------------------------------------------------------------------------------------
def quantize_frequencies(probabilities, precision: int) -> np.ndarray:
    """Integer frequency tables for float probability rows: the deterministic procedure of the spec.

    Per row p (normalised to sum 1), with M = 2**precision and L symbols (L <= M):
      1. f[s] = max(1, round_half_up(p[s] * M))
      2. while sum(f) > M: decrement the f[s] > 1 whose decrement raises the cross-entropy
         -sum p log2 f least, i.e. the smallest p[s] * log2(f[s] / (f[s] - 1));
         while sum(f) < M: increment the f[s] with the largest p[s] * log2((f[s] + 1) / f[s]).
         Ties go to the lowest symbol index.
    Every symbol keeps f >= 1, so any index can be encoded. Python runs this once (at export) and
    the result is stored in the manifest; no decoder or C encoder ever recomputes it.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probabilities must be [tables, levels], got shape {list(p.shape)}")
    if not 1 <= precision <= MAX_PRECISION or p.shape[1] > 1 << precision:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION} with 2**precision >= levels, got {precision}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
        raise ValueError("probabilities must be finite, non-negative, with a positive sum per row")
    p = p / p.sum(axis=1, keepdims=True)
    total = 1 << precision
    out = np.empty(p.shape, dtype=np.int64)
    for row, pr in enumerate(p):
        f = np.maximum(1, np.floor(pr * total + 0.5)).astype(np.int64)
        while f.sum() > total:
            with np.errstate(divide="ignore"):
                cost = np.where(f > 1, pr * np.log2(f / np.maximum(f - 1, 1)), np.inf)
            f[int(np.argmin(cost))] -= 1
        while f.sum() < total:
            f[int(np.argmax(pr * np.log2((f + 1) / f)))] += 1
        out[row] = f
    return out


def validate_frequencies(frequencies, precision, tables: int, levels: int) -> np.ndarray:
    """The manifest's tables as int64 [tables, levels], or ValueError naming what is wrong."""
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)):
        raise ValueError(f"frequency_bits must be an integer, got {precision!r}")
    if not 1 <= precision <= MAX_PRECISION or levels > 1 << precision:
        raise ValueError(f"frequency_bits must be in 1..{MAX_PRECISION} with 2**bits >= {levels} levels, got {precision}")
    try:
        f = np.asarray(frequencies)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"frequencies are not a rectangular table of integers: {exc}") from None
    if f.shape != (tables, levels):
        raise ValueError(f"frequencies must be [{tables}, {levels}], got {list(f.shape)}")
    if f.dtype.kind not in "iu":
        raise ValueError(f"frequencies must be integers, got {f.dtype}")
    f = f.astype(np.int64)
    if np.any(f < 1):
        raise ValueError("every frequency must be >= 1 (any index must stay encodable)")
    sums = f.sum(axis=1)
    bad = np.flatnonzero(sums != 1 << precision)
    if bad.size:
        raise ValueError(f"frequency table {int(bad[0])} sums to {int(sums[bad[0]])}, expected 2**{precision} = {1 << precision}")
    return f


def cumulative(frequencies: np.ndarray) -> np.ndarray:
    """start[t][s] = sum of freq[t][:s]."""
    f = np.asarray(frequencies, dtype=np.int64)
    return np.concatenate([np.zeros((f.shape[0], 1), dtype=np.int64), np.cumsum(f, axis=1)[:, :-1]], axis=1)


# --- encoder ---------------------------------------------------------------------------------------
def _units_to_body(units: list[int]) -> bytes:
    """Units in decoder order -> body bytes (first unit one byte when below 256)."""
    if not units:
        return b""
    first = units[0]
    head = bytes([first]) if first < 256 else first.to_bytes(2, "little")
    return head + np.asarray(units[1:], dtype="<u2").tobytes()


def _flush_units(x: int) -> list[int]:
    """The final state as units in decoder order: none for 0, one below 2**16, else high then low."""
    if x >> UNIT_BITS:
        return [x >> UNIT_BITS, x & UNIT_MASK]
    return [x] if x else []


def max_body_bytes(count: int) -> int:
    """Upper bound on a body of ``count`` symbols: at most one unit per symbol plus a 4-byte flush.

    (Before each symbol the encoder emits at most once: x < 2**32, and x >> 16 < 2**16 is already
    below every freq << (32 - precision).)
    """
    return 2 * count + 4


def check_symbols(symbols: np.ndarray, levels: int) -> None:
    """ValueError unless every symbol is in 0..levels-1 (what every encoder checks first)."""
    if symbols.size and (symbols.min() < 0 or symbols.max() >= levels):
        raise ValueError(f"symbol out of range 0..{levels - 1}")


class EncoderTables:
    """Validated tables of one model, ready to encode (``frequencies`` int [T, levels])."""

    def __init__(self, frequencies, precision: int):
        self.precision = int(precision)
        self.freq = np.asarray(frequencies, dtype=np.int64)
        self.start = cumulative(self.freq)
        self.limit = self.freq << (STATE_BITS - self.precision)  # emit a unit first when x >= limit
        self._native = native_tables(self.freq, self.precision)  # the device's C encoder, when built

    def _check(self, symbols: np.ndarray, tables: np.ndarray) -> None:
        check_symbols(symbols, self.freq.shape[1])
        if tables.size and (tables.min() < 0 or tables.max() >= self.freq.shape[0]):
            raise ValueError(f"table index out of range 0..{self.freq.shape[0] - 1}")

    def encode(self, symbols, table_index) -> bytes:
        """Body of one payload. symbols, table_index: int [S] in coding order (scalar loop: for one
        payload a Python loop over ints beats ~S numpy calls on 1-element arrays)."""
        sym = np.asarray(symbols, dtype=np.int64).reshape(-1)
        tab = np.asarray(table_index, dtype=np.int64).reshape(-1)
        if sym.shape != tab.shape:
            raise ValueError(f"{sym.size} symbols but {tab.size} table indices")
        self._check(sym, tab)
        if self._native is not None:
            return self._native.encode(sym, tab)
        precision = self.precision
        x, units = 0, []
        # Reverse order: rANS is last in, first out, and the decoder must return symbols in order.
        for f, c, limit in zip(self.freq[tab, sym][::-1].tolist(), self.start[tab, sym][::-1].tolist(),
                               self.limit[tab, sym][::-1].tolist()):
            if x >= limit:
                units.append(x & UNIT_MASK)
                x >>= UNIT_BITS
            q, r = divmod(x, f)
            x = (q << precision) + r + c
        units.reverse()
        return _units_to_body(_flush_units(x) + units)

    def encode_batch(self, symbols, table_index) -> list[bytes]:
        """Bodies of N payloads at once, vectorised across payloads (same bytes as ``encode``).

        symbols: int [N, S] in coding order; table_index: int [S] or [N, S].
        """
        sym = np.asarray(symbols, dtype=np.int64)
        if sym.ndim != 2:
            raise ValueError(f"symbols must be [payloads, symbols], got shape {list(sym.shape)}")
        n, count = sym.shape
        tab = np.broadcast_to(np.asarray(table_index, dtype=np.int64), (n, count))
        self._check(sym, tab)
        freq, start, limit = (a.astype(np.uint64) for a in (self.freq, self.start, self.limit))
        x = np.zeros(n, dtype=np.uint64)
        emitted = np.zeros((n, count), dtype=bool)
        words = np.zeros((n, count), dtype=np.uint16)
        for i in range(count - 1, -1, -1):
            t, s = tab[:, i], sym[:, i]
            f = freq[t, s]
            out = x >= limit[t, s]
            emitted[:, i] = out
            words[:, i] = (x & np.uint64(UNIT_MASK)).astype(np.uint16)
            x = np.where(out, x >> np.uint64(UNIT_BITS), x)
            x = (x // f << np.uint64(self.precision)) + x % f + start[t, s]
        return [_units_to_body(_flush_units(int(x[row])) + words[row][emitted[row]].tolist()) for row in range(n)]


# --- decoder ---------------------------------------------------------------------------------------
class DecoderTables:
    """Validated tables of one model, ready to decode. Memory is O(tables x levels), whatever the
    precision: the symbol of a slot is found by bisecting the table's starts."""

    def __init__(self, frequencies, precision: int):
        self.precision = int(precision)
        freq = np.asarray(frequencies, dtype=np.int64)
        start = cumulative(freq)
        shift = STATE_BITS - self.precision
        self._starts = start.tolist()
        # Per table and symbol: (symbol, freq, start, limit); limit = the encoder's emit threshold.
        self._entries = [[(s, f, c, f << shift) for s, (f, c) in enumerate(zip(fr, st))]
                         for fr, st in zip(freq.tolist(), start.tolist())]
        # Slot -> entry lists are faster than bisecting (~30 %), but cost 8 bytes per slot and table:
        # only for small tables (the shipped bundle: 19 x 4096 slots, 0.6 MB).
        self._slots = None
        if freq.shape[0] << self.precision <= 1 << 20:
            self._slots = [[e for e in row for _ in range(e[1])] for row in self._entries]
        self._native = native_tables(freq, self.precision)  # the device's C decoder, when built

    def decode(self, body: bytes, table_index) -> np.ndarray:
        """Symbols of one body; raise PayloadError unless ``body`` is exactly their encoding.

        table_index: int [S], the table of each symbol (S comes from the model, never from the body).
        """
        index = np.asarray(table_index, dtype=np.int64).reshape(-1)
        if self._native is not None:
            symbols = self._native.decode(bytes(body), index)
            if symbols is not None:
                return symbols
            # refused: the Python decoder refuses it too and names the problem (codec/native.py)
        tables = index.tolist()
        return self.decode_adaptive(body, len(tables), lambda i, out: tables[i])

    def decode_adaptive(self, body: bytes, count: int, table_at, outside: int = 0) -> np.ndarray:
        """Symbols of one body whose table may depend on the symbols decoded before it.

        table_at(i, out) -> table of symbol i, where out[:i] are the symbols decoded so far and
        out[count] holds ``outside`` (a context coder points neighbours outside the payload there).
        The checks make the decoder the exact inverse of the encoder: a unit is read only where the
        encoder must have emitted one, the body is consumed exactly and the state ends at 0, so a
        truncated, extended or altered body is rejected rather than decoded into other symbols.
        """
        body = bytes(body)
        if len(body) > max_body_bytes(count):
            raise PayloadError(f"rans body of {len(body)} bytes is longer than any encoding of {count} symbols")
        units = self._units(body)
        pos, end, x = 0, len(units), 0
        while x < LOW and pos < end:
            x = (x << UNIT_BITS) | units[pos]
            pos += 1
        precision, mask = self.precision, (1 << self.precision) - 1
        starts, entries, slots = self._starts, self._entries, self._slots
        out = [0] * count + [outside]
        for i in range(count):
            t = table_at(i, out)
            slot = x & mask
            s, f, c, limit = slots[t][slot] if slots is not None else entries[t][bisect_right(starts[t], slot) - 1]
            x = f * (x >> precision) + slot - c
            if x < LOW and pos < end:
                x = (x << UNIT_BITS) | units[pos]
                pos += 1
                if x < limit:
                    raise PayloadError(f"rans body is corrupt at symbol {i}: a unit where the encoder writes none")
            out[i] = s
        if pos != end:
            raise PayloadError(f"rans body has {end - pos} unit(s) left after the last symbol (corrupt or wrong model)")
        if x != 0:
            raise PayloadError("rans body does not end in the initial state (truncated, corrupt or wrong model)")
        return np.asarray(out[:count], dtype=np.uint8)

    @staticmethod
    def _units(body: bytes) -> list[int]:
        """The body's units in decoder order, checking the canonical form of the first one."""
        if not body:
            return []
        head = 1 if len(body) % 2 else 2
        first = int.from_bytes(body[:head], "little")
        if first == 0:
            raise PayloadError("rans body starts with a zero unit (the encoder never writes one)")
        if head == 2 and first < 256:
            raise PayloadError("rans body's first unit is below 256 but takes two bytes (not canonical)")
        return [first] + np.frombuffer(body, dtype="<u2", offset=head).tolist()
