"""The codec's round trip is exact for every coder, shape and symbol distribution."""

import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agilenn.codec import (
    HEADER_SIZE_V1,
    FeatureCodec,
    PayloadError,
    dequantize,
    header_size,
    model_check,
    order0_entropy_bits,
    parse_header,
    quantize,
)


@st.composite
def codec_and_indices(draw):
    levels = draw(st.integers(2, 256))
    channels = draw(st.integers(1, 12))
    height = draw(st.integers(1, 9))
    width = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Skewed, peaked and flat distributions, with zeros, so ans meets every kind of table.
    concentration = draw(st.sampled_from([0.05, 0.5, 1.0, 20.0]))
    probs = rng.dirichlet(np.full(levels, concentration), size=channels)
    probs[probs < 1e-4] = 0.0
    probs[:, 0] += 1e-3  # keep every row's sum positive
    centroids = np.sort(rng.choice(np.arange(-1000, 1000), size=levels, replace=False)) / 100.0
    codec = FeatureCodec(centroids, channels, height, width, symbol_probabilities=probs)
    # Draw symbols from the table (the realistic case), but mix in symbols the table calls impossible.
    p = codec.probabilities
    idx = np.stack([rng.choice(levels, size=height * width, p=p[c]) for c in range(channels)])
    if draw(st.booleans()):
        flips = rng.random(idx.shape) < 0.1
        idx[flips] = rng.integers(0, levels, size=int(flips.sum()))
    sent = draw(st.integers(0, channels))
    return codec, idx.reshape(channels, height, width).astype(np.uint8), sent


@settings(max_examples=120, deadline=None)
@given(codec_and_indices(), st.sampled_from(["ans", "zstd", "raw"]))
def test_round_trip_is_exact(case, coder):
    codec, indices, sent = case
    payload = codec.encode_indices(indices, coder=coder, channels_sent=sent)
    decoded_indices, header = codec.decode_indices(payload)
    assert header.coder == coder
    assert header.channels_sent == sent
    assert header.channels_total == codec.shape[0]
    assert np.array_equal(decoded_indices, indices[:sent])
    decoded = codec.decode(payload)
    assert decoded.features.shape == codec.shape
    assert np.array_equal(decoded.features[:sent], dequantize(indices[:sent], codec.centroids))
    assert not decoded.features[sent:].any(), "truncated channels must be zero-filled"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=16, unique=True),
       st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=64))
def test_quantize_picks_the_nearest_centroid(raw_centroids, values):
    centroids = np.array(sorted(raw_centroids), dtype=np.float32)
    if np.any(np.diff(centroids) <= 0):
        return
    x = np.array(values, dtype=np.float32)
    idx = quantize(x, centroids)
    chosen = np.abs(x - centroids[idx])
    best = np.abs(x[:, None] - centroids[None, :]).min(axis=1)
    assert np.allclose(chosen, best, atol=1e-5)


def test_quantize_rejects_non_finite_features():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([0.0, np.nan]), np.array([0.0, 1.0]))


def test_compact_header_is_3_bytes_and_checks_the_model():
    codec = FeatureCodec([0.0, 1.0, 2.0, 3.0], 6, 7, 7, symbol_probabilities=np.full((6, 4), 0.25))
    payload = codec.encode_indices(np.zeros((6, 7, 7), np.uint8), coder="raw", channels_sent=4)
    header = parse_header(payload)
    assert (header.version, header.coder, header.channels_sent, header.size) == (2, "raw", 4, 3)
    assert payload[:3] == bytes((0xA0, model_check(4, 6, 7, 7), 4))
    assert len(payload) == 3 + (4 * 49 * 2 + 7) // 8
    # the same payload for a model of another shape or level count is refused, naming the model
    for other in (FeatureCodec([0.0, 1.0, 2.0, 3.0], 6, 7, 8), FeatureCodec([0.0, 1.0, 2.0], 6, 7, 7)):
        with pytest.raises(PayloadError, match="model check .* built for another model"):
            other.decode(payload)


def test_self_describing_header_is_13_bytes_and_still_read():
    v1 = FeatureCodec([0.0, 1.0, 2.0, 3.0], 6, 7, 7, payload_version=1)
    payload = v1.encode_indices(np.ones((6, 7, 7), np.uint8), coder="raw", channels_sent=4)
    header = parse_header(payload)
    assert HEADER_SIZE_V1 == header.size == 13 and header.version == 1
    assert (header.levels, header.channels_total, header.channels_sent, header.height, header.width) == (4, 6, 4, 7, 7)
    decoded = FeatureCodec([0.0, 1.0, 2.0, 3.0], 6, 7, 7).decode(payload)  # a version-2 codec reads it
    assert decoded.indices.shape == (4, 7, 7) and (decoded.indices == 1).all()


def test_reheader_swaps_the_header_version_and_keeps_the_body():
    args = ([0.0, 1.0, 2.0, 3.0], 6, 7, 7)
    v1, v2 = FeatureCodec(*args, payload_version=1), FeatureCodec(*args)
    idx = np.random.default_rng(5).integers(0, 4, size=(6, 7, 7)).astype(np.uint8)
    for sent in (0, 3, 6):
        old, new = v1.encode_indices(idx, "raw", sent), v2.encode_indices(idx, "raw", sent)
        assert v1.reheader(new) == old and v2.reheader(old) == new and v2.reheader(new) == new
    with pytest.raises(PayloadError, match="built for another model"):
        FeatureCodec([0.0, 1.0, 2.0, 3.0], 6, 7, 8, payload_version=1).reheader(new)


@pytest.mark.parametrize("channels, size", [(0, 3), (127, 3), (128, 4), (16383, 4), (16384, 5), (65535, 5)])
def test_channels_sent_is_leb128(channels, size):
    codec = FeatureCodec([0.0, 1.0], max(channels, 1), 1, 1)
    payload = codec.encode_indices(np.zeros((max(channels, 1), 1, 1), np.uint8), coder="raw", channels_sent=channels)
    assert header_size(channels) == size == parse_header(payload).size
    assert parse_header(payload).channels_sent == channels


def test_byte_budget_drops_trailing_channels_until_it_fits():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=10)
    codec = FeatureCodec(np.arange(8.0), 10, 7, 7, symbol_probabilities=probs)
    idx = np.stack([rng.choice(8, size=49, p=probs[c]) for c in range(10)]).reshape(10, 7, 7).astype(np.uint8)
    full, sent = codec.encode_within(idx, None)
    assert sent == 10
    for budget in (len(full), len(full) - 1, len(full) // 2, header_size(0) + 20, header_size(0)):
        payload, sent = codec.encode_within(idx, budget)
        assert len(payload) <= budget
        assert parse_header(payload).channels_sent == sent
        if sent < 10:  # one more channel would not have fitted
            assert len(codec.encode_indices(idx, channels_sent=sent + 1)) > budget
    with pytest.raises(ValueError, match="below the 3-byte payload header"):
        codec.encode_within(idx, header_size(0) - 1)


def test_ans_is_close_to_the_entropy_of_its_model():
    """With the table equal to the data's own distribution, ans pays only a few bytes of overhead."""
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(8, 0.7), size=24)
    codec = FeatureCodec(np.arange(8.0), 24, 7, 7, symbol_probabilities=probs)
    samples = np.stack([
        np.stack([rng.choice(8, size=49, p=probs[c]) for c in range(24)]) for _ in range(20)
    ]).astype(np.uint8)
    bodies = [len(codec.encode_indices(s.reshape(24, 7, 7), coder="ans")) - header_size(24) for s in samples]
    entropy_bytes = order0_entropy_bits(samples, 8) / 8 / len(samples)
    assert np.mean(bodies) < entropy_bytes * 1.05 + 8


def test_documented_example_vector():
    """docs/protocol.md's worked example, byte for byte (a test vector for other implementations)."""
    codec = FeatureCodec([0.0, 1.0, 2.0, 3.0], 2, 1, 2)
    payload = codec.encode_indices(np.array([[[1, 3]], [[0, 2]]], np.uint8), coder="raw")
    assert payload.hex(" ") == "a0 0f 02 8d"
    v1 = FeatureCodec([0.0, 1.0, 2.0, 3.0], 2, 1, 2, payload_version=1)
    payload = v1.encode_indices(np.array([[[1, 3]], [[0, 2]]], np.uint8), coder="raw")
    assert payload.hex(" ") == "41 47 01 00 03 02 00 02 00 01 00 02 00 8d"
    # the doc states these bytes, and how its check byte comes out of zlib's CRC-32
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    example = doc[doc.index("### Example"):]
    assert "a0 0f 02   header" in example and "CRC-32 of 03 02 00 01 00 02 00" in example
    assert "41 47 01 00 03 02 00 02 00 01 00 02 00 8d" in example
    assert zlib.crc32(bytes.fromhex("03 02 00 01 00 02 00")) & 0xFF == 0x0F
