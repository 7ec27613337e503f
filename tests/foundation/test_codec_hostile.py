"""Hostile payloads get a PayloadError naming the problem: never a crash, hang or huge allocation."""

import struct

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agilenn.codec import MAGIC, FeatureCodec, PayloadError, header_size, model_check
from agilenn.codec.rans import quantize_frequencies

PROBS = np.random.default_rng(0).dirichlet(np.ones(4), size=6)
FREQS = quantize_frequencies(PROBS, 12)


@pytest.fixture(scope="module")
def codec():
    return FeatureCodec([-1.0, 0.0, 1.0, 2.0], 6, 7, 7, symbol_probabilities=PROBS, frequencies=FREQS, frequency_bits=12)


@pytest.fixture(scope="module")
def good_payloads(codec):
    idx = np.random.default_rng(3).integers(0, 4, size=(6, 7, 7)).astype(np.uint8)
    return {name: codec.encode_indices(idx, coder=name) for name in ("ans", "rans", "zstd", "raw")}


def header(coder_id=2, levels=4, total=6, sent=6, h=7, w=7, magic=MAGIC, version=1):
    """A version-1 (self-describing) header."""
    return struct.pack("<2sBBBHHHH", magic, version, coder_id, levels - 1, total, sent, h, w)


CHECK = model_check(4, 6, 7, 7)  # the fixture model's


def compact(coder_id=2, check=CHECK, sent=b"\x06"):
    """A version-2 (compact) header; ``sent`` is channels_sent's LEB128 bytes as sent."""
    return bytes((0xA0 | coder_id, check)) + sent


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "truncated payload"),
        (b"AG\x01", "truncated payload"),
        (header(magic=b"AX"), "bad magic"),
        (header(version=9), "unsupported payload version 9"),
        (header(coder_id=7), "unknown coder id 7"),
        (header(sent=7), "claims 7 channels sent of only 6"),
        (header(total=60000, sent=60000), "does not match the model"),
        (header(h=65535, w=65535), "does not match the model"),
        (header(levels=256), "quantization levels"),
        (header(coder_id=0) + b"\x00" * 5, "raw body is 5 bytes"),
        (header(coder_id=2) + b"\xff" * 5000, "impossible for 294 symbols"),
        (header(coder_id=1) + b"not zstd at all", "not a zstd frame"),
        (header(coder_id=3) + b"\xff" * 593, "longer than any encoding of 294 symbols"),
        (header(coder_id=3) + b"\x00", "starts with a zero unit"),
        (header(coder_id=3) + b"\x01\x00", "below 256 but takes two bytes"),
        (header(coder_id=3) + b"\x01\x00\x00", "left after the last symbol|does not end|corrupt"),
        (b"PK\x03\x04", "bad first byte 0x50"),
        (compact()[:2], "compact header is at least 3"),
        (compact(coder_id=7), "unknown coder id 7"),
        (compact(check=CHECK ^ 0x5A), "model check .* does not match the model's"),
        (compact(sent=b"\x07"), "claims 7 channels sent of the model's 6"),
        (compact(sent=b"\x86\x00"), "not in its shortest LEB128 form"),
        (compact(sent=b"\x86"), "runs past its end"),
        (compact(sent=b"\xff\xff\xff\x01"), "longer than 3 bytes"),
        (compact(sent=b"\xff\xff\x7f"), "above 65535"),
        (compact(coder_id=0) + b"\x00" * 5, "raw body is 5 bytes"),
        (compact(coder_id=3) + b"\x00", "starts with a zero unit"),
    ],
)
def test_named_errors(codec, payload, message):
    with pytest.raises(PayloadError, match=message):
        codec.decode(payload)


def test_raw_symbol_beyond_levels():
    codec = FeatureCodec([0.0, 1.0, 2.0], 1, 2, 2)  # 3 levels in 2-bit fields: 3 is out of range
    with pytest.raises(PayloadError, match="holds symbol 3"):
        codec.decode(header(coder_id=0, levels=3, total=1, sent=1, h=2, w=2) + b"\xff")


def test_not_bytes_is_rejected(codec):
    with pytest.raises(PayloadError, match="must be bytes"):
        codec.decode("AG")  # type: ignore[arg-type]


def test_zstd_bomb_is_refused_before_decompression(codec):
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\x00" * (64 << 20))
    assert len(bomb) < 10_000
    with pytest.raises(PayloadError, match="declares 67108864 bytes"):
        codec.decode(header(coder_id=1) + bomb)


def test_zstd_frame_that_hides_its_size_is_capped(codec):
    # A streamed frame carries no content size; the decoder must still stop at the model's size.
    cobj = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = cobj.compress(b"\x01" * (1 << 20)) + cobj.flush()
    with pytest.raises(PayloadError):
        codec.decode(header(coder_id=1) + frame)


def test_zstd_wrong_symbol_range(codec):
    body = zstandard.ZstdCompressor().compress(bytes([9]) * 294)
    with pytest.raises(PayloadError, match="holds symbol 9"):
        codec.decode(header(coder_id=1) + body)


def test_truncating_any_good_payload_never_crashes(codec, good_payloads):
    for name, payload in good_payloads.items():
        for cut in range(len(payload)):
            try:
                codec.decode(payload[:cut])
            except PayloadError:
                pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(codec, data):
    try:
        decoded = codec.decode(data)
    except PayloadError:
        return
    assert decoded.features.shape == (6, 7, 7)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["ans", "rans", "zstd", "raw"]), st.data())
def test_fuzz_mutated_payloads(codec, good_payloads, name, data):
    """Flip, insert and delete bytes of real payloads: decode or PayloadError, nothing else."""
    payload = bytearray(good_payloads[name])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(0, len(payload) - 1)))
        if op == "flip" and payload:
            payload[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            payload[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif payload:
            del payload[pos]
    try:
        decoded = codec.decode(bytes(payload))
    except PayloadError:
        return
    assert decoded.features.shape == (6, 7, 7)
    assert decoded.indices.max(initial=0) < 4


def test_ans_needs_tables():
    codec = FeatureCodec([0.0, 1.0], 2, 2, 2)  # no symbol tables: zstd/raw only
    with pytest.raises(PayloadError, match="not available"):
        codec.encode_indices(np.zeros((2, 2, 2), np.uint8), coder="ans")
    payload = codec.encode_indices(np.zeros((2, 2, 2), np.uint8), coder="raw")
    assert len(payload) == header_size(2) + 1
