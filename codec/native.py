"""The device's C rANS coder (firmware/csrc/agn_rans.c, agn_rans_ctx.c), used by the host too.

Why: rANS decoding is sequential within a payload, and in Python each symbol costs ~230 ns
(codec/rans.py), so a CIFAR-10 rans-ctx payload (1,536 symbols) took ~360 us of the server's time,
six times the constriction-coded ans payload of the same features; encoding (the agent's, when
the device part runs on the host) is the same kind of loop. The C coder does the same work in a
few microseconds. It is not a second implementation: it is the code the firmware runs,
which tests/firmware holds byte for byte against codec/rans.py, built for the host by setup.py as
the shared library agilenn.codec._agn_rans and called through ctypes (no Python C API).

Optional by design: without a C compiler at install time, or with AGILENN_NATIVE_CODER=0 in the
environment, `library()` is None and the codecs decode in Python, with the same results.

Encoding gives the same bytes (tests check it), and the Python encoder's range checks run first,
so a bad symbol is refused with the same ValueError.

Rejections: a body the C decoder refuses (AGN_ERR_DATA) is handed to the Python decoder, which
refuses it too (tests/foundation/test_codec_native.py checks that they always agree) and says
exactly what is wrong with it; corrupt payloads are rare, so their cost does not matter.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENV_SWITCH = "AGILENN_NATIVE_CODER"  # "0": never load the C coder
AGN_OK, AGN_ERR_DATA = 0, 5  # agn_common.h


class _Symbol(ctypes.Structure):  # agn_rans_symbol (agn_rans.h)
    _fields_ = [("rcp", ctypes.c_uint32), ("freq", ctypes.c_uint16), ("start", ctypes.c_uint16),
                ("rcp_shift", ctypes.c_uint8)]


class _Model(ctypes.Structure):  # agn_rans_model
    _fields_ = [("symbols", ctypes.POINTER(_Symbol)), ("num_tables", ctypes.c_uint32), ("levels", ctypes.c_uint16),
                ("precision", ctypes.c_uint8)]


class _CtxModel(ctypes.Structure):  # agn_rans_ctx_model (agn_rans_ctx.h)
    _fields_ = [("rows", ctypes.POINTER(_Model)), ("bins", ctypes.POINTER(ctypes.c_uint8)),
                ("row_map", ctypes.POINTER(ctypes.c_uint8)), ("neighbours", ctypes.c_uint8 * 3),
                ("num_neighbours", ctypes.c_uint8), ("num_bins", ctypes.c_uint16), ("channels", ctypes.c_uint16),
                ("height", ctypes.c_uint16), ("width", ctypes.c_uint16)]


_NEIGHBOUR_KIND = {"left": 0, "up": 1, "prev": 2}  # AGN_CTX_LEFT, AGN_CTX_UP, AGN_CTX_PREV
_u8p = ctypes.POINTER(ctypes.c_uint8)
_u16p = ctypes.POINTER(ctypes.c_uint16)
_UNLOADED = object()
_library = _UNLOADED


def _find_library() -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_agn_rans{suffix}"
        if path.is_file():
            return path
    return None


def library() -> ctypes.CDLL | None:
    """The loaded C coder, or None (not built, or switched off with AGILENN_NATIVE_CODER=0)."""
    global _library
    if _library is _UNLOADED:
        path = None if os.environ.get(ENV_SWITCH, "1") == "0" else _find_library()
        lib = None
        if path is not None:
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                lib = None
        if lib is not None:
            lib.agn_rans_prepare.argtypes = [_u16p, ctypes.c_uint32, ctypes.c_uint16, ctypes.c_uint,
                                             ctypes.POINTER(_Symbol), ctypes.c_size_t, ctypes.POINTER(_Model)]
            lib.agn_rans_decode.argtypes = [ctypes.POINTER(_Model), _u8p, ctypes.c_size_t, _u16p, ctypes.c_size_t,
                                            _u8p]
            lib.agn_rans_ctx_decode.argtypes = [ctypes.POINTER(_CtxModel), _u8p, ctypes.c_size_t, ctypes.c_size_t,
                                                _u8p]
            lib.agn_rans_encode.argtypes = [ctypes.POINTER(_Model), _u8p, _u16p, ctypes.c_size_t, _u8p,
                                            ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
            lib.agn_rans_ctx_encode.argtypes = [ctypes.POINTER(_CtxModel), _u8p, ctypes.c_size_t, _u8p,
                                                ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
            for f in (lib.agn_rans_prepare, lib.agn_rans_decode, lib.agn_rans_ctx_decode, lib.agn_rans_encode,
                      lib.agn_rans_ctx_encode):
                f.restype = ctypes.c_int
        _library = lib
    return _library


def _bytes_arg(body: bytes):
    """A uint8 pointer to body's bytes (body is kept alive by the caller's reference)."""
    return ctypes.cast(ctypes.c_char_p(body), _u8p)


class NativeTables:
    """Frequency rows prepared once by agn_rans_prepare, as the firmware prepares them."""

    def __init__(self, lib: ctypes.CDLL, frequencies: np.ndarray, precision: int):
        freq = np.ascontiguousarray(frequencies, dtype=np.uint16)
        tables, levels = freq.shape
        self._lib = lib
        self._symbols = (_Symbol * freq.size)()
        self.model = _Model()
        status = lib.agn_rans_prepare(freq.ctypes.data_as(_u16p), tables, levels, int(precision), self._symbols,
                                      freq.size, ctypes.byref(self.model))
        if status != AGN_OK:  # the Python side validated these tables already: a disagreement is a bug
            raise ValueError(f"agn_rans_prepare refused the frequency tables (status {status})")

    def decode(self, body: bytes, tables: np.ndarray) -> np.ndarray | None:
        """Symbols of one body coded with tables[i] for symbol i, or None when C refuses the body."""
        t = np.ascontiguousarray(tables, dtype=np.uint16)
        out = np.empty(t.size, dtype=np.uint8)
        status = self._lib.agn_rans_decode(ctypes.byref(self.model), _bytes_arg(body), len(body),
                                           t.ctypes.data_as(_u16p), t.size, out.ctypes.data_as(_u8p))
        return _result(status, out)

    def encode(self, symbols: np.ndarray, tables: np.ndarray) -> bytes:
        """Body of symbols[i] coded with tables[i] (both checked in range by the caller)."""
        s = np.ascontiguousarray(symbols, dtype=np.uint8)
        t = np.ascontiguousarray(tables, dtype=np.uint16)
        return _encoded(lambda out, cap, length: self._lib.agn_rans_encode(
            ctypes.byref(self.model), s.ctypes.data_as(_u8p), t.ctypes.data_as(_u16p), s.size, out, cap, length),
            s.size)


class NativeContextCoder:
    """agn_rans_ctx_encode / agn_rans_ctx_decode for one validated codec.rans_ctx.ContextModel."""

    def __init__(self, lib: ctypes.CDLL, model):
        self._lib = lib
        self._rows = tables(model.frequencies, model.frequency_bits)
        if self._rows is None:
            raise ValueError("the C coder does not take the context model's frequency rows")
        self._bins = np.ascontiguousarray(model.bins, dtype=np.uint8)
        self._row_map = np.ascontiguousarray(model.row_map.reshape(-1), dtype=np.uint8)
        channels, height, width = model.shape
        self._count_per_channel = height * width
        kinds = [_NEIGHBOUR_KIND[n] for n in model.neighbours]
        self.model = _CtxModel(ctypes.pointer(self._rows.model), self._bins.ctypes.data_as(_u8p),
                               self._row_map.ctypes.data_as(_u8p), (ctypes.c_uint8 * 3)(*kinds, *[0] * (3 - len(kinds))),
                               len(kinds), model.num_bins, channels, height, width)

    def decode(self, body: bytes, channels_sent: int) -> np.ndarray | None:
        """uint8 [channels_sent * height * width], or None when C refuses the body."""
        out = np.empty(channels_sent * self._count_per_channel, dtype=np.uint8)
        status = self._lib.agn_rans_ctx_decode(ctypes.byref(self.model), _bytes_arg(body), len(body), channels_sent,
                                               out.ctypes.data_as(_u8p))
        return _result(status, out)

    def encode(self, symbols: np.ndarray) -> bytes:
        """Body of symbols uint8 [channels_sent, height, width] (checked in range by the caller)."""
        s = np.ascontiguousarray(symbols, dtype=np.uint8)
        channels_sent = s.shape[0]
        return _encoded(lambda out, cap, length: self._lib.agn_rans_ctx_encode(
            ctypes.byref(self.model), s.ctypes.data_as(_u8p), channels_sent, out, cap, length), s.size)


def _encoded(call, count: int) -> bytes:
    """Run an agn_*_encode call into a buffer of AGN_RANS_MAX_BODY_BYTES(count) = 2 * count + 4."""
    cap = 2 * count + 4
    out = (ctypes.c_uint8 * cap)()
    length = ctypes.c_size_t(0)
    status = call(out, cap, ctypes.byref(length))
    if status != AGN_OK:
        raise ValueError(f"the C rANS encoder failed with status {status} (a bug, please report it)")
    return bytes(out[: length.value])


def _result(status: int, out: np.ndarray) -> np.ndarray | None:
    """The symbols, or None for the Python decoder to decide: always for a refused body (AGN_ERR_DATA),
    and for any other status too, which would be a bug here (the tables and sizes were validated in
    Python), so one payload never fails because of the C build; the log says it happened."""
    if status == AGN_OK:
        return out
    if status != AGN_ERR_DATA:
        log.warning("the C rANS decoder returned status %d for validated tables (a bug, please report it); "
                    "decoding this payload in Python", status)
    return None


# Prepared rows by content: a model's encoder, decoder and context coder hold the same rows, and
# agn_rans_prepare divides once per entry, so each distinct table set is prepared once per process.
_prepared: dict[tuple, NativeTables | None] = {}


def tables(frequencies, precision: int) -> NativeTables | None:
    """The C coder for these frequency rows, or None (not built, or tables it does not take)."""
    lib = library()
    if lib is None:
        return None
    freq = np.ascontiguousarray(frequencies, dtype=np.int64)
    key = (freq.shape, freq.tobytes(), int(precision))
    if key not in _prepared:
        _prepared[key] = _or_none(lambda: NativeTables(lib, freq, precision))
    return _prepared[key]


def context_coder(model) -> NativeContextCoder | None:
    """The C coder for a validated rans_ctx.ContextModel, or None (not built, or a model it does not take)."""
    lib = library()
    return None if lib is None else _or_none(lambda: NativeContextCoder(lib, model))


def _or_none(make):
    # Tables the Python coder takes but the C one does not (limits of the MCU build, e.g. more than
    # 256 levels) stay with the Python coder rather than making the model unloadable.
    try:
        return make()
    except (ValueError, OverflowError) as exc:
        log.info("C rANS coder not used for this model (%s); coding in Python", exc)
        return None


__all__ = ["ENV_SWITCH", "NativeContextCoder", "NativeTables", "context_coder", "library", "tables"]
