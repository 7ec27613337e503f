"""The C rANS coder (firmware/csrc/agn_rans.c) against the Python reference, byte for byte:
docs/protocol.md's example, the shipped bundle's real symbols, hostile bodies, and the compilers."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from agn_c_helpers import AGN_ERR_ARG, AGN_ERR_DATA, AGN_ERR_NOSPACE, AGN_OK, CFLAGS, CSRC, CLib, build_shared

from agilenn.codec import PayloadError, header_size, rans
from agilenn.models.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "repository" / "agilenn-fashion-mnist" / "1"
DOC_FREQ = [[200, 40, 15, 1], [1, 5, 50, 200]]
DOC_BODY = bytes.fromhex("03 f0 d4 ff e7")


@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    return CLib(build_shared(tmp_path_factory.mktemp("agn")))


@pytest.fixture(scope="module")
def shipped_indices():
    """Centroid indices of 1,000 Fashion-MNIST test images from the shipped bundle's device part."""
    from agilenn.benchmarks.codec_bench import device_features
    from agilenn.training.datasets import load_dataset

    bundle = load_bundle(SHIPPED)
    images = load_dataset("fashion-mnist", "test").images[:1000]
    return bundle, bundle.codec().quantize(device_features(bundle, images))


def test_doc_example(clib):
    st, model = clib.prepare(DOC_FREQ, 8)
    assert st == AGN_OK
    st, body = clib.encode_channels(model, np.array([[2, 3, 1, 3], [3, 0, 2, 1]]))
    assert st == AGN_OK and body == DOC_BODY
    st, symbols = clib.decode_channels(model, DOC_BODY, 2, 4)
    assert st == AGN_OK and symbols.tolist() == [[2, 3, 1, 3], [3, 0, 2, 1]]


def test_c_payloads_equal_python_payloads_on_shipped_bundle_symbols(clib, shipped_indices):
    bundle, indices = shipped_indices
    codec = bundle.codec()
    st, model = clib.prepare(codec.frequencies, codec.frequency_bits)
    assert st == AGN_OK
    n, c, h, w = indices.shape
    assert n >= 1000
    mismatches = []
    for j in range(n):
        python_payload = codec.encode_indices(indices[j], "rans")
        st, body = clib.encode_channels(model, indices[j].reshape(c, h * w))
        assert st == AGN_OK
        head = header_size(c)
        if python_payload[head:] != body:
            mismatches.append(j)
        elif j % 10 == 0:  # the C decoder reads the Python bytes back, and the payload decodes in Python
            st, back = clib.decode_channels(model, body, c, h * w)
            assert st == AGN_OK and np.array_equal(back, indices[j].reshape(c, h * w))
            decoded, _ = codec.decode_indices(python_payload[:head] + body)
            assert np.array_equal(decoded, indices[j])
    assert not mismatches, f"{len(mismatches)} of {n} payloads differ, first at image {mismatches[0]}"
    # Truncated payloads (fewer channels sent, as a byte budget does) agree too.
    for sent in range(c + 1):
        st, body = clib.encode_channels(model, indices[0, :sent].reshape(sent, h * w))
        assert st == AGN_OK and body == codec.encode_indices(indices[0], "rans", sent)[header_size(sent):]


def test_c_agrees_with_python_on_random_tables_and_table_indices(clib):
    rng = np.random.default_rng(11)
    for trial in range(60):
        precision = int(rng.integers(1, 17))
        levels = int(rng.integers(2, min(8, 1 << precision) + 1))
        tables = int(rng.integers(1, 6))
        freq = rans.quantize_frequencies(rng.dirichlet(np.full(levels, 0.4), size=tables), precision)
        st, model = clib.prepare(freq, precision)
        assert st == AGN_OK
        count = int(rng.integers(0, 300))
        tab = rng.integers(0, tables, count)
        sym = rng.integers(0, levels, count)
        st, body = clib.encode(model, sym, tab)
        assert st == AGN_OK
        assert body == rans.EncoderTables(freq, precision).encode(sym, tab), (trial, precision, levels)
        assert np.array_equal(rans.DecoderTables(freq, precision).decode(body, tab), sym)


def test_c_decoder_rejects_what_python_rejects(clib):
    rng = np.random.default_rng(5)
    freq = np.array([[3000, 700, 300, 96], [1, 1, 2, 4092]])
    st, model = clib.prepare(freq, 12)
    assert st == AGN_OK
    dec = rans.DecoderTables(freq, 12)
    tab = np.repeat(np.arange(2), 8)
    agree = 0
    for _ in range(3000):
        body = rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8).tobytes()
        st, symbols = clib.decode_channels(model, body, 2, 8)
        try:
            expected = dec.decode(body, tab)
        except PayloadError:
            assert st == AGN_ERR_DATA
            continue
        assert st == AGN_OK and np.array_equal(symbols.reshape(-1), expected)
        agree += 1
    assert agree > 0  # some random bodies are valid encodings, and both sides accept them alike


def test_c_encoder_reports_bad_arguments_and_small_buffers(clib):
    st, _ = clib.prepare([[2048, 2047, 1, 1]], 12)  # sums to 4097
    assert st == AGN_ERR_ARG
    st, _ = clib.prepare([[4096, 0]], 12)  # a zero frequency
    assert st == AGN_ERR_ARG
    st, model = clib.prepare(DOC_FREQ, 8)
    assert clib.encode_channels(model, np.array([[4, 0, 0, 0], [0, 0, 0, 0]]))[0] == AGN_ERR_ARG  # symbol 4
    assert clib.encode(model, [0], [2])[0] == AGN_ERR_ARG  # table 2 of 2
    symbols = np.array([[2, 3, 1, 3], [3, 0, 2, 1]])
    for cap in range(len(DOC_BODY)):
        assert clib.encode_channels(model, symbols, out_cap=cap)[0] == AGN_ERR_NOSPACE
    assert clib.encode_channels(model, symbols, out_cap=len(DOC_BODY)) == (AGN_OK, DOC_BODY)


@pytest.mark.parametrize("source", ["agn_common.c", "agn_rans.c", "agn_frame.c"])
def test_sources_compile_for_cortex_m7(tmp_path, source):
    result = subprocess.run(["arm-none-eabi-gcc", *CFLAGS, "-mcpu=cortex-m7", "-mthumb", "-c", str(CSRC / source),
                             "-o", str(tmp_path / "out.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generator_const_tables_equal_what_agn_rans_prepare_computes(clib):
    """The generated library ships the prepared tables as const (no start-up work); they must be the
    values agn_rans_prepare() would compute, entry for entry."""
    from agilenn.firmware.generate import rans_symbol

    rng = np.random.default_rng(2)
    shipped = load_bundle(SHIPPED).codec()
    cases = [(shipped.frequencies, shipped.frequency_bits)]
    cases += [(rans.quantize_frequencies(rng.dirichlet(np.ones(6), size=3), p), p) for p in (1 + 2, 8, 12, 16)]
    for freq, precision in cases:
        st, model = clib.prepare(freq, precision)
        assert st == AGN_OK
        starts = rans.cumulative(freq)
        for k, (f, c) in enumerate(zip(np.ravel(freq).tolist(), np.ravel(starts).tolist())):
            entry = model.symbols[k]
            assert (entry.rcp, entry.freq, entry.start, entry.rcp_shift) == rans_symbol(f, c)
