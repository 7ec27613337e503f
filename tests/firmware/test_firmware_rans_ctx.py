"""The C context coder (firmware/csrc/agn_rans_ctx.c) against the Python reference, byte for byte:
docs/protocol.md's example, 1,000 shipped-bundle test images, random models, hostile bodies, the
sanitizer fuzz and the Cortex-M7 build."""

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
from agn_c_helpers import AGN_ERR_ARG, AGN_ERR_DATA, AGN_ERR_NOSPACE, AGN_OK, CFLAGS, CSRC, CLib, RansModel, compile_c

from agilenn.codec import PayloadError, header_size
from agilenn.codec.rans_ctx import NEIGHBOURS, ContextCoder, ContextModel
from agilenn.models.bundle import load_bundle

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHIPPED = ROOT / "models" / "repository" / "agilenn-fashion-mnist" / "1"
SOURCES = ["agn_common.c", "agn_rans.c", "agn_rans_ctx.c", "agn_frame.c"]  # agn_frame.c: CLib binds agn_crc32
DOC_CONTEXT = {"neighbours": ["left", "prev"], "bins": [0, 1, 1, 1, 2], "frequency_bits": 8,
               "frequencies": [[200, 40, 15, 1], [60, 100, 60, 36], [1, 5, 50, 200]],
               "row_map": [[0, 0, 0, 1, 1, 2, 0, 0, 0], [0, 1, 0, 1, 2, 2, 1, 1, 0]]}
DOC_BODY = bytes.fromhex("20 03 f5 81")


class CtxModel(ctypes.Structure):
    _fields_ = [("rows", ctypes.POINTER(RansModel)), ("bins", ctypes.POINTER(ctypes.c_uint8)),
                ("row_map", ctypes.POINTER(ctypes.c_uint8)), ("neighbours", ctypes.c_uint8 * 3),
                ("num_neighbours", ctypes.c_uint8), ("num_bins", ctypes.c_uint16), ("channels", ctypes.c_uint16),
                ("height", ctypes.c_uint16), ("width", ctypes.c_uint16)]


class CtxLib(CLib):
    def context(self, model: ContextModel):
        """The C model of a Python ContextModel (tables prepared by agn_rans_prepare)."""
        st, rows = self.prepare(model.frequencies, model.frequency_bits)
        assert st == AGN_OK
        bins = np.ascontiguousarray(model.bins, dtype=np.uint8)
        row_map = np.ascontiguousarray(model.row_map, dtype=np.uint8)
        c = CtxModel()
        c.rows = ctypes.pointer(rows)
        c.bins = bins.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        c.row_map = row_map.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        for k, name in enumerate(model.neighbours):
            c.neighbours[k] = NEIGHBOURS.index(name)
        c.num_neighbours, c.num_bins = len(model.neighbours), model.num_bins
        c.channels, c.height, c.width = model.shape
        c._keep = (rows, bins, row_map)
        return c

    def ctx_encode(self, model, symbols: np.ndarray, out_cap: int | None = None):
        sym = np.ascontiguousarray(symbols, dtype=np.uint8)
        cap = 2 * sym.size + 4 if out_cap is None else out_cap
        out = (ctypes.c_uint8 * max(1, cap))()
        n = ctypes.c_size_t(0)
        st = self.lib.agn_rans_ctx_encode(ctypes.byref(model), sym.ctypes.data_as(ctypes.c_void_p),
                                          ctypes.c_size_t(sym.shape[0]), out, ctypes.c_size_t(cap), ctypes.byref(n))
        return st, bytes(out[: n.value]) if st == AGN_OK else None

    def ctx_decode(self, model, body: bytes, channels_sent: int):
        count = channels_sent * model.height * model.width
        out = np.zeros(max(1, count), dtype=np.uint8)
        src = (ctypes.c_uint8 * max(1, len(body))).from_buffer_copy(bytes(body) or b"\0")
        st = self.lib.agn_rans_ctx_decode(ctypes.byref(model), src, ctypes.c_size_t(len(body)),
                                          ctypes.c_size_t(channels_sent), out.ctypes.data_as(ctypes.c_void_p))
        return st, out[:count].reshape(channels_sent, model.height, model.width)


@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    out = tmp_path_factory.mktemp("agn_ctx")
    lib = out / "libagn_ctx.so"
    compile_c([*CFLAGS, "-shared", "-fPIC", "-o", str(lib), *[str(CSRC / s) for s in SOURCES]], out)
    return CtxLib(lib)


def doc_model():
    return ContextModel(DOC_CONTEXT, 2, 2, 2, 4)


def test_doc_example(clib):
    model = clib.context(doc_model())
    symbols = np.array([[[2, 3], [1, 3]], [[3, 0], [2, 1]]])
    assert clib.ctx_encode(model, symbols) == (AGN_OK, DOC_BODY)
    st, back = clib.ctx_decode(model, DOC_BODY, 2)
    assert st == AGN_OK and np.array_equal(back, symbols)


def test_c_payloads_equal_python_payloads_on_shipped_bundle_symbols(clib):
    """1,000 Fashion-MNIST test images through the shipped bundle's integer device part (what the
    agent sends by default), coded by C and by Python with the manifest's context tables."""
    from agilenn.training.datasets import load_dataset

    bundle = load_bundle(SHIPPED)
    codec = bundle.codec()
    assert codec.default_coder == "rans-ctx"
    indices = bundle.int8_device().run(load_dataset("fashion-mnist", "test").images[:1000]).indices
    model = clib.context(codec.context)
    python_bodies = codec._coder("rans-ctx")._coder.encode_batch(indices)
    mismatches = []
    for j, sample in enumerate(indices):
        st, body = clib.ctx_encode(model, sample)
        assert st == AGN_OK
        if body != python_bodies[j] or body != codec.encode_indices(sample)[header_size(len(sample)):]:
            mismatches.append(j)
        elif j % 10 == 0:  # the C decoder reads the bytes back, and the payload decodes in Python
            st, back = clib.ctx_decode(model, body, len(sample))
            assert st == AGN_OK and np.array_equal(back, sample)
            decoded, header = codec.decode_indices(codec.encode_indices(sample))
            assert header.coder == "rans-ctx" and np.array_equal(decoded, sample)
    assert not mismatches, f"{len(mismatches)} of {len(indices)} payloads differ, first at image {mismatches[0]}"
    for sent in range(indices.shape[1] + 1):  # truncated payloads (a byte budget) agree too
        st, body = clib.ctx_encode(model, indices[0, :sent])
        assert st == AGN_OK and body == codec.encode_indices(indices[0], "rans-ctx", sent)[header_size(sent):]


def test_c_agrees_with_python_on_random_models(clib):
    rng = np.random.default_rng(4)
    for trial in range(40):
        levels = int(rng.integers(2, 7))
        neighbours = list(rng.permutation(NEIGHBOURS)[: int(rng.integers(1, 4))])
        bins = rng.integers(0, int(rng.integers(1, levels + 2)), levels + 1)
        bins[0] = bins.max()  # keep the bins' count at max + 1 with any value first
        num_bins = int(bins.max()) + 1
        channels, h, w = (int(v) for v in rng.integers(1, 5, 3))
        rows = int(rng.integers(1, 9))
        precision = int(rng.integers(max(1, int(np.ceil(np.log2(levels)))), 17))
        from agilenn.codec.rans import quantize_frequencies

        freq = quantize_frequencies(rng.dirichlet(np.full(levels, 0.5), size=rows), precision)
        context = {"neighbours": neighbours, "bins": bins.tolist(), "frequency_bits": precision,
                   "frequencies": freq.tolist(),
                   "row_map": rng.integers(0, rows, (channels, num_bins ** len(neighbours))).tolist()}
        model = ContextModel(context, channels, h, w, levels)
        cmodel, coder = clib.context(model), ContextCoder(model)
        for sent in range(channels + 1):
            sym = rng.integers(0, levels, (sent, h, w))
            st, body = clib.ctx_encode(cmodel, sym)
            assert st == AGN_OK and body == coder.encode(sym), (trial, neighbours, sent)
            st, back = clib.ctx_decode(cmodel, body, sent)
            assert st == AGN_OK and np.array_equal(back, sym)


def test_c_decoder_rejects_what_python_rejects(clib):
    rng = np.random.default_rng(6)
    model = doc_model()
    cmodel, coder = clib.context(model), ContextCoder(model)
    agree = 0
    for _ in range(3000):
        body = rng.integers(0, 256, int(rng.integers(0, 14)), dtype=np.uint8).tobytes()
        st, symbols = clib.ctx_decode(cmodel, body, 2)
        try:
            expected = coder.decode(body, 2)
        except PayloadError:
            assert st == AGN_ERR_DATA
            continue
        assert st == AGN_OK and np.array_equal(symbols, expected)
        agree += 1
    assert agree > 0


def test_c_encoder_reports_bad_arguments_and_small_buffers(clib):
    model = clib.context(doc_model())
    symbols = np.array([[[2, 3], [1, 3]], [[3, 0], [2, 1]]])
    assert clib.ctx_encode(model, np.array([[[4, 0], [0, 0]]]))[0] == AGN_ERR_ARG  # symbol 4 of 4 levels
    assert clib.ctx_encode(model, np.zeros((3, 2, 2)))[0] == AGN_ERR_ARG  # 3 channels of 2
    for cap in range(len(DOC_BODY)):
        assert clib.ctx_encode(model, symbols, out_cap=cap)[0] == AGN_ERR_NOSPACE
    assert clib.ctx_encode(model, symbols, out_cap=len(DOC_BODY)) == (AGN_OK, DOC_BODY)
    # tables that break their rules are found while coding, never read out of bounds
    bad = clib.context(doc_model())
    bad.bins = (ctypes.c_uint8 * 5)(0, 1, 1, 1, 3)  # bin 3 of 3
    assert clib.ctx_encode(bad, symbols)[0] == AGN_ERR_ARG
    bad = clib.context(doc_model())
    bad.neighbours[1] = 7
    assert clib.ctx_encode(bad, symbols)[0] == AGN_ERR_ARG
    bad = clib.context(doc_model())
    bad.row_map = (ctypes.c_uint8 * 18)(*([3] * 18))  # row 3 of 3
    assert clib.ctx_encode(bad, symbols)[0] == AGN_ERR_ARG
    assert clib.ctx_decode(bad, DOC_BODY, 2)[0] == AGN_ERR_ARG


def test_fuzz_under_sanitizers(tmp_path):
    exe = tmp_path / "fuzz_rans_ctx"
    sanitize = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    compile_c([*CFLAGS, *sanitize, f"-I{CSRC}", "-o", str(exe), str(HERE / "fuzz_rans_ctx.c"),
               *[str(CSRC / s) for s in SOURCES]], tmp_path)
    result = subprocess.run([str(exe), "6000", "7"], capture_output=True, text=True, timeout=240,
                            env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"})
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(item.split("=") for item in result.stdout.split()[1:])
    assert result.stdout.startswith("ok ") and int(counts["models"]) == 6000
    assert int(counts["hostile_accepted"]) > 0 and int(counts["hostile_rejected"]) > 0


def test_compiles_for_cortex_m7(tmp_path):
    result = subprocess.run(["arm-none-eabi-gcc", *CFLAGS, "-mcpu=cortex-m7", "-mthumb", "-c",
                             str(CSRC / "agn_rans_ctx.c"), "-o", str(tmp_path / "out.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
