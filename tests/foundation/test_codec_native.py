"""The device's C rANS decoder on the host (codec/native.py) agrees with codec/rans.py everywhere:
same symbols for every valid body, the same refusals for corrupt ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from agilenn.codec import PayloadError, parse_header
from agilenn.codec import native
from agilenn.codec.rans import DecoderTables, EncoderTables
from agilenn.codec.rans_ctx import ContextCoder
from agilenn.models import DEFAULT_REPOSITORY, load_bundle
from agilenn.models.model_repository import shipped_versions

NATIVE = native.library() is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="the C coder was not built (no C compiler at install time)")


def test_the_c_coder_is_built_where_there_is_a_compiler():
    """The install builds it wherever a C compiler is (CI's machines have gcc): a build that quietly
    fell back to Python would show up here, not only as slower decoding."""
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler on this machine: the codec decodes in Python")
    assert NATIVE, "setup.py's optional extension agilenn.codec._agn_rans was not built: see the pip install log"


def test_the_switch_turns_it_off():
    code = "from agilenn.codec import native; print(native.library() is None)"
    env = {**os.environ, native.ENV_SWITCH: "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def _python_only(coder):
    """The same coder with the C coder detached (its table objects' too): the pure-Python reference."""
    for part in (coder, getattr(coder, "_encoder", None), getattr(coder, "_decoder", None)):
        if part is not None:
            part._native = None
    return coder


def _fashion_payloads(bundle, coder: str, n: int) -> list[bytes]:
    from agilenn.training.datasets import load_dataset

    images = load_dataset("fashion-mnist", "test").images[:n]
    codec = bundle.codec()
    indices = bundle.int8_device().run(images).indices
    return [codec.encode_indices(i, coder) for i in indices]


@needs_native
@pytest.mark.parametrize("model, version", shipped_versions("fashion-mnist"))
def test_shipped_features_encode_to_the_same_bytes(model, version):
    bundle = load_bundle(DEFAULT_REPOSITORY / model / version)
    codec = bundle.codec()
    from agilenn.training.datasets import load_dataset

    indices = bundle.int8_device().run(load_dataset("fashion-mnist", "test").images[:300]).indices
    ctx, ctx_py = ContextCoder(codec.context), _python_only(ContextCoder(codec.context))
    order0 = EncoderTables(codec.frequencies, codec.frequency_bits)
    order0_py = _python_only(EncoderTables(codec.frequencies, codec.frequency_bits))
    assert ctx._native is not None and order0._native is not None
    for i in indices:
        for sent in (i.shape[0], max(1, i.shape[0] // 3)):
            part = i[:sent]
            assert ctx.encode(part) == ctx_py.encode(part)
            tables = np.repeat(np.arange(sent), part[0].size)
            assert order0.encode(part.reshape(-1), tables) == order0_py.encode(part.reshape(-1), tables)
    with pytest.raises(ValueError, match="symbol out of range"):
        ctx.encode(np.full_like(indices[0], codec.levels))


@needs_native
@pytest.mark.parametrize("model, version", shipped_versions("fashion-mnist"))
def test_shipped_payloads_decode_to_the_same_symbols(model, version):
    bundle = load_bundle(DEFAULT_REPOSITORY / model / version)
    codec = bundle.codec()
    for name in [c for c in ("rans-ctx", "rans") if c in codec.available_coders]:
        payloads = _fashion_payloads(bundle, name, 300)
        # channels_sent below the total too: the byte budget's shorter payloads
        half = max(1, codec.shape[0] // 2)
        payloads += [codec.encode_indices(codec.decode_indices(p)[0], name, channels_sent=half) for p in payloads[:20]]
        for payload in payloads:
            header = parse_header(payload)
            body = payload[header.size:]
            if name == "rans-ctx":
                fast, slow = ContextCoder(codec.context), _python_only(ContextCoder(codec.context))
                got = fast.decode(body, header.channels_sent)
                assert fast._native is not None
                np.testing.assert_array_equal(got, slow.decode(body, header.channels_sent))
            else:
                freq, bits = codec.frequencies, codec.frequency_bits
                fast, slow = DecoderTables(freq, bits), _python_only(DecoderTables(freq, bits))
                tables = np.repeat(np.arange(header.channels_sent), codec.shape[1] * codec.shape[2])
                np.testing.assert_array_equal(fast.decode(body, tables), slow.decode(body, tables))


def _outcome(decode):
    try:
        return decode()
    except PayloadError:
        return None


@needs_native
def test_corrupt_bodies_get_the_same_verdict_from_both():
    """Truncated, extended, bit-flipped and random bodies: the C decoder refuses exactly what the Python
    one refuses (None from native), and where both accept they agree on every symbol."""
    bundle = load_bundle(DEFAULT_REPOSITORY / "agilenn-fashion-mnist" / "4")
    codec = bundle.codec()
    context = codec.context
    model = native.context_coder(context)
    reference = _python_only(ContextCoder(context))
    order0 = native.tables(codec.frequencies, codec.frequency_bits)
    order0_reference = _python_only(DecoderTables(codec.frequencies, codec.frequency_bits))
    rng = np.random.default_rng(7)
    accepted = refused = 0
    for name, payload in [("rans-ctx", p) for p in _fashion_payloads(bundle, "rans-ctx", 40)] + \
                         [("rans", p) for p in _fashion_payloads(bundle, "rans", 40)]:
        header = parse_header(payload)
        body = payload[header.size:]
        variants = [body[:-1], body[:-2], body + b"\x00", body + b"\x01\x02", b"", body[1:],
                    bytes(rng.integers(0, 256, len(body), dtype=np.uint8))]
        for _ in range(12):
            flipped = bytearray(body)
            flipped[rng.integers(len(flipped))] ^= 1 << int(rng.integers(8))
            variants.append(bytes(flipped))
        for v in variants:
            for sent in {header.channels_sent, max(1, header.channels_sent - 1)}:
                if name == "rans-ctx":
                    want = _outcome(lambda: reference.decode(v, sent))
                    got = model.decode(v, sent)
                else:
                    tables = np.repeat(np.arange(sent), codec.shape[1] * codec.shape[2])
                    want = _outcome(lambda: order0_reference.decode(v, tables))
                    got = order0.decode(v, tables)
                assert (want is None) == (got is None), (name, v.hex(), sent)
                if want is not None:
                    np.testing.assert_array_equal(got, want.reshape(-1))
                    accepted += 1
                else:
                    refused += 1
    assert refused > 1000 and accepted > 0  # both kinds of verdict were exercised


@needs_native
def test_a_refused_body_still_gets_the_python_decoders_reason():
    """What the server answers for a corrupt payload does not depend on which decoder ran."""
    bundle = load_bundle(DEFAULT_REPOSITORY / "agilenn-fashion-mnist" / "4")
    codec = bundle.codec()
    reference = _python_only(ContextCoder(codec.context))
    payload = _fashion_payloads(bundle, "rans-ctx", 1)[0]
    size = parse_header(payload).size
    header, body = payload[:size], payload[size:]
    sent = parse_header(payload).channels_sent
    checked = 0
    for cut in range(1, len(body)):
        try:
            reference.decode(body[:-cut], sent)
            continue
        except PayloadError as exc:
            reason = str(exc)
        with pytest.raises(PayloadError) as got:
            codec.decode(header + body[:-cut])
        assert reason in str(got.value)
        checked += 1
    assert checked > 0
