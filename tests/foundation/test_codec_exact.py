"""Decoders are exact: each accepts precisely the bytes its encoder writes for some symbols, so a
payload cut to its header, padded, or followed by junk is rejected instead of decoding to wrong
symbols (issue 9)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agilenn.codec import FeatureCodec, PayloadError, header_size

HEADER_SIZE = header_size(6)  # the compact header of the fixture's payloads (every channel sent)

PROBS = np.random.default_rng(0).dirichlet(np.ones(4), size=6)


@pytest.fixture(scope="module")
def codec():
    return FeatureCodec([-1.0, 0.0, 1.0, 2.0], 6, 7, 7, symbol_probabilities=PROBS)


def _indices(seed):
    return np.random.default_rng(seed).integers(0, 4, size=(6, 7, 7)).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_ans_payload_cut_short_is_rejected_unless_the_cut_is_an_exact_encoding(codec, seed):
    payload = codec.encode_indices(_indices(seed), coder="ans")
    for cut in range(HEADER_SIZE + 1, len(payload)):
        with pytest.raises(PayloadError, match="ans body"):
            codec.decode(payload[:cut])
    # The header alone is the one exception, because it is exact: with constriction, symbols that are
    # all 0 (the bottom of every channel's CDF) leave the coder's state at 0, so their encoding is the
    # empty body. A header-only payload therefore means "every sent index is 0", and nothing else.
    indices, header = codec.decode_indices(payload[:HEADER_SIZE])
    assert header.channels_sent == 6 and not indices.any()
    assert codec.encode_indices(np.zeros((6, 7, 7), np.uint8), coder="ans") == payload[:HEADER_SIZE]


@pytest.mark.parametrize("seed", range(20))
def test_ans_extra_zero_byte_is_rejected(codec, seed):
    payload = codec.encode_indices(_indices(seed), coder="ans")
    np.testing.assert_array_equal(codec.decode_indices(payload)[0], _indices(seed))
    with pytest.raises(PayloadError, match="ans body"):
        codec.decode(payload + b"\x00")


def test_ans_empty_body_is_accepted_when_it_is_the_exact_encoding():
    # One very likely symbol fits in the coder's initial state: its encoding is no bytes at all.
    sure = FeatureCodec([0.0, 1.0], 1, 1, 1, symbol_probabilities=[[0.999, 0.001]])
    payload = sure.encode_indices(np.zeros((1, 1, 1), np.uint8), coder="ans")
    assert len(payload) == HEADER_SIZE
    assert sure.decode_indices(payload)[0].tolist() == [[[0]]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24))
def test_any_accepted_ans_body_is_the_encoding_of_what_it_decodes_to(codec, body):
    payload = codec.encode_indices(_indices(0), coder="ans", channels_sent=1)[:header_size(1)] + body
    try:
        indices, _ = codec.decode_indices(payload)
    except PayloadError:
        return
    full = np.zeros((6, 7, 7), np.uint8)
    full[:1] = indices
    assert codec.encode_indices(full, coder="ans", channels_sent=1) == payload


def test_zstd_accepts_one_frame_and_nothing_after_it(codec):
    payload = codec.encode_indices(_indices(2), coder="zstd")
    codec.decode(payload)
    for junk in (b"\x00", b"junk", payload[HEADER_SIZE:]):  # a byte, junk, a second whole frame
        with pytest.raises(PayloadError, match="unused data"):
            codec.decode(payload + junk)


def test_raw_padding_bits_must_be_zero():
    codec = FeatureCodec([0.0, 1.0, 2.0, 3.0], 1, 1, 3)  # 3 symbols of 2 bits: 2 padding bits
    payload = codec.encode_indices(np.array([[[1, 2, 3]]], np.uint8), coder="raw")
    codec.decode(payload)
    with pytest.raises(PayloadError, match="padding bits"):
        codec.decode(payload[:-1] + bytes([payload[-1] | 0x80]))
