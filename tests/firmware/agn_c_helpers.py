"""Build the static C sources of firmware/csrc (coder + framing) with the system gcc and bind them
with ctypes, so tests compare the C bytes with the Python reference byte for byte."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

CSRC = Path(__file__).resolve().parents[2] / "firmware" / "csrc"
SOURCES = ["agn_common.c", "agn_rans.c", "agn_frame.c"]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
AGN_OK, AGN_ERR_ARG, AGN_ERR_NOSPACE, AGN_ERR_DATA = 0, 1, 2, 5
AGN_ERR_FRAME, AGN_ERR_VERSION, AGN_ERR_TOO_LONG = 6, 7, 8


def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        raise RuntimeError("gcc is required for the C library tests (.ci/setup installs it)")
    return path


def compile_c(args: list[str], cwd: Path) -> None:
    result = subprocess.run([gcc(), *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise AssertionError(f"gcc {' '.join(args)} failed:\n{result.stderr}")


def build_shared(out_dir: Path) -> Path:
    lib = out_dir / "libagn_codec.so"
    compile_c([*CFLAGS, "-shared", "-fPIC", "-o", str(lib), *[str(CSRC / s) for s in SOURCES]], out_dir)
    return lib


class RansSymbol(ctypes.Structure):
    _fields_ = [("rcp", ctypes.c_uint32), ("freq", ctypes.c_uint16), ("start", ctypes.c_uint16),
                ("rcp_shift", ctypes.c_uint8)]


class RansModel(ctypes.Structure):
    _fields_ = [("symbols", ctypes.POINTER(RansSymbol)), ("num_tables", ctypes.c_uint32),
                ("levels", ctypes.c_uint16), ("precision", ctypes.c_uint8)]


class Frame(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint8), ("type", ctypes.c_uint8), ("seq", ctypes.c_uint16),
                ("payload", ctypes.POINTER(ctypes.c_uint8)), ("payload_len", ctypes.c_size_t)]


class FrameReader(ctypes.Structure):
    _fields_ = [("buf", ctypes.POINTER(ctypes.c_uint8)), ("cap", ctypes.c_size_t), ("len", ctypes.c_size_t),
                ("overflow", ctypes.c_uint8)]


def _u8(data: bytes):
    return (ctypes.c_uint8 * max(1, len(data))).from_buffer_copy(bytes(data) or b"\0")


class CLib:
    """Thin ctypes wrapper; every call returns (status, result)."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.agn_crc32.restype = ctypes.c_uint32
        self.lib.agn_crc32.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
        self.lib.agn_status_name.restype = ctypes.c_char_p

    # --- rans ---------------------------------------------------------------------------------
    def prepare(self, frequencies, precision: int):
        f = np.ascontiguousarray(frequencies, dtype=np.uint16)
        tables, levels = f.shape
        symbols = (RansSymbol * (tables * levels))()
        model = RansModel()
        st = self.lib.agn_rans_prepare(f.ctypes.data_as(ctypes.POINTER(ctypes.c_uint16)), ctypes.c_uint32(tables),
                                       ctypes.c_uint16(levels), ctypes.c_uint(precision), symbols,
                                       ctypes.c_size_t(tables * levels), ctypes.byref(model))
        model._keep = (symbols, f)  # the model points into these
        return st, model

    def encode_channels(self, model, indices: np.ndarray, out_cap: int | None = None):
        sym = np.ascontiguousarray(indices, dtype=np.uint8)
        channels, positions = sym.shape
        cap = 2 * sym.size + 4 if out_cap is None else out_cap
        out = (ctypes.c_uint8 * max(1, cap))()
        n = ctypes.c_size_t(0)
        st = self.lib.agn_rans_encode_channels(ctypes.byref(model), sym.ctypes.data_as(ctypes.c_void_p),
                                               ctypes.c_size_t(channels), ctypes.c_size_t(positions), out,
                                               ctypes.c_size_t(cap), ctypes.byref(n))
        return st, bytes(out[: n.value]) if st == AGN_OK else None

    def encode(self, model, symbols, tables, out_cap: int | None = None):
        sym = np.ascontiguousarray(symbols, dtype=np.uint8)
        tab = np.ascontiguousarray(tables, dtype=np.uint16)
        cap = 2 * sym.size + 4 if out_cap is None else out_cap
        out = (ctypes.c_uint8 * max(1, cap))()
        n = ctypes.c_size_t(0)
        st = self.lib.agn_rans_encode(ctypes.byref(model), sym.ctypes.data_as(ctypes.c_void_p),
                                      tab.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(sym.size), out,
                                      ctypes.c_size_t(cap), ctypes.byref(n))
        return st, bytes(out[: n.value]) if st == AGN_OK else None

    def decode_channels(self, model, body: bytes, channels: int, positions: int):
        out = np.zeros(max(1, channels * positions), dtype=np.uint8)
        st = self.lib.agn_rans_decode_channels(ctypes.byref(model), _u8(body), ctypes.c_size_t(len(body)),
                                               ctypes.c_size_t(channels), ctypes.c_size_t(positions),
                                               out.ctypes.data_as(ctypes.c_void_p))
        return st, out[: channels * positions].reshape(channels, positions)

    # --- framing ------------------------------------------------------------------------------
    def crc32(self, data: bytes, crc: int = 0) -> int:
        return self.lib.agn_crc32(ctypes.c_uint32(crc), bytes(data), ctypes.c_size_t(len(data)))

    def frame_encode(self, version: int, mtype: int, seq: int, payload: bytes, out_cap: int | None = None):
        raw = len(payload) + 10  # AGN_FRAME_WIRE_BYTES(n): COBS bound of header + payload + CRC, 2 delimiters
        cap = raw + raw // 254 + 1 + 2 if out_cap is None else out_cap
        out = (ctypes.c_uint8 * max(1, cap))()
        n = ctypes.c_size_t(0)
        st = self.lib.agn_frame_encode(ctypes.c_uint8(version), ctypes.c_uint8(mtype), ctypes.c_uint16(seq),
                                       _u8(payload), ctypes.c_size_t(len(payload)), out, ctypes.c_size_t(cap),
                                       ctypes.byref(n))
        return st, bytes(out[: n.value]) if st == AGN_OK else None

    def frame_decode(self, chunk: bytes, work_cap: int | None = None, in_place: bool = False):
        cap = len(chunk) if work_cap is None else work_cap
        src = _u8(chunk)
        work = src if in_place else (ctypes.c_uint8 * max(1, cap))()
        frame = Frame()
        st = self.lib.agn_frame_decode(src, ctypes.c_size_t(len(chunk)), work, ctypes.c_size_t(cap),
                                       ctypes.byref(frame))
        payload = ctypes.string_at(frame.payload, frame.payload_len) if st in (AGN_OK,) else None
        return st, frame, payload

    def cobs_encode(self, data: bytes):
        cap = len(data) + len(data) // 254 + 1
        out = (ctypes.c_uint8 * cap)()
        n = ctypes.c_size_t(0)
        st = self.lib.agn_cobs_encode(_u8(data), ctypes.c_size_t(len(data)), out, ctypes.c_size_t(cap), ctypes.byref(n))
        return st, bytes(out[: n.value])

    def read_chunks(self, stream: bytes, cap: int):
        """Push every byte through agn_frame_reader_push; return the events in order:
        ("chunk", bytes) or ("too_long", None)."""
        buf = (ctypes.c_uint8 * max(1, cap))()
        reader = FrameReader()
        self.lib.agn_frame_reader_init(ctypes.byref(reader), buf, ctypes.c_size_t(cap))
        events, n = [], ctypes.c_size_t(0)
        for byte in stream:
            st = self.lib.agn_frame_reader_push(ctypes.byref(reader), ctypes.c_uint8(byte), ctypes.byref(n))
            if st == AGN_ERR_TOO_LONG:
                events.append(("too_long", None))
            elif st != AGN_OK:
                raise AssertionError(f"agn_frame_reader_push returned {st}")
            elif n.value:
                events.append(("chunk", bytes(buf[: n.value])))
        return events
