"""Serial framing and messages: COBS, CRC, resynchronisation after noise, message layouts."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agilenn.device_agent.framing import (
    HEADER,
    MAX_ENCODED,
    MAX_PAYLOAD,
    SEQ_NONE,
    ErrorCode,
    Frame,
    FrameError,
    FrameReader,
    MsgType,
    cobs_decode,
    cobs_encode,
    pack_frame,
    unpack_frame,
)
from agilenn.device_agent.messages import (
    MIN_MAX_RX,
    ErrorMsg,
    Features,
    Hello,
    HelloReply,
    Image,
    Local,
    Prediction,
    Reason,
    dequantize_logits,
)


@pytest.mark.parametrize("raw, stuffed", [
    # The examples of Cheshire & Baker's COBS paper / the usual reference table.
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
])
def test_cobs_reference_vectors(raw, stuffed):
    assert cobs_encode(raw) == stuffed
    assert cobs_decode(stuffed) == raw


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(max_size=600))
def test_frame_round_trip(seq, mtype, payload):
    wire = pack_frame(Frame(mtype, seq, payload))
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert unpack_frame(wire[1:-1]) == Frame(mtype, seq, payload)


def test_frame_layout_and_crc():
    wire = pack_frame(Frame(MsgType.HELLO, 0x0102, b"\x01\x00\x00\x00"))
    raw = cobs_decode(wire[1:-1])
    assert raw[:6] == bytes([3, 0x01, 0x02, 0x01, 4, 0])  # version 3
    assert int.from_bytes(raw[-4:], "little") == zlib.crc32(raw[:-4])


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_single_bit_flip_is_detected(payload, data):
    wire = bytearray(pack_frame(Frame(MsgType.IMAGE, 7, payload)))
    pos = data.draw(st.integers(1, len(wire) - 2))
    wire[pos] ^= 1 << data.draw(st.integers(0, 7))
    events = FrameReader().feed(bytes(wire))
    assert events and all(isinstance(e, FrameError) for e in events)


def test_oversized_payload_is_refused():
    with pytest.raises(ValueError):
        pack_frame(Frame(MsgType.IMAGE, 0, bytes(MAX_PAYLOAD + 1)))
    assert unpack_frame(pack_frame(Frame(MsgType.IMAGE, 0, bytes(MAX_PAYLOAD)))[1:-1]).payload == bytes(MAX_PAYLOAD)


def test_reader_resynchronises_after_noise_byte_by_byte():
    rng = np.random.default_rng(1)
    frames = [Frame(MsgType.IMAGE, i, rng.integers(0, 256, 300, dtype=np.uint8).tobytes()) for i in range(20)]
    stream = bytearray()
    junk_chunks = 0
    for f in frames:
        junk = rng.integers(1, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()  # no zero: one chunk
        stream += junk
        junk_chunks += 1
        stream += pack_frame(f)
    reader = FrameReader()
    events = []
    for i in range(0, len(stream), 7):  # arbitrary read sizes
        events += reader.feed(bytes(stream[i:i + 7]))
    got = [e for e in events if isinstance(e, Frame)]
    errors = [e for e in events if isinstance(e, FrameError)]
    assert got == frames
    assert len(errors) == junk_chunks
    assert all(e.code == ErrorCode.BAD_FRAME and e.seq == SEQ_NONE for e in errors)


def test_reader_drops_overlong_chunk_and_recovers():
    reader = FrameReader()
    events = reader.feed(b"\x01" * (MAX_ENCODED + 10))
    assert [e.code for e in events] == [ErrorCode.TOO_LONG]
    assert reader.feed(b"\x01" * 1000) == []  # still inside the same runaway chunk: reported once
    good = Frame(MsgType.HELLO, 3, b"abcd")
    assert reader.feed(pack_frame(good)) == [good]
    assert reader.pending == 0


def test_bad_version_keeps_the_seq():
    body = bytes([9, MsgType.HELLO, 0x34, 0x12, 0, 0])
    body += zlib.crc32(body).to_bytes(4, "little")
    [err] = FrameReader().feed(b"\x00" + cobs_encode(body) + b"\x00")
    assert err.code == ErrorCode.BAD_VERSION and err.seq == 0x1234


def test_messages_round_trip():
    assert Hello.parse(Hello(1, 512, "fw-1.2").pack()) == Hello(1, 512, "fw-1.2")
    hr = HelloReply(1, 28, 28, 10, MAX_PAYLOAD, "m:1", True)
    assert HelloReply.parse(hr.pack()) == hr
    img = np.arange(28 * 28, dtype=np.uint32).astype(np.uint8).reshape(28, 28, 1)
    assert np.array_equal(Image.parse(Image(img).pack()).pixels, img)
    p = Prediction(7, True, Reason.DEADLINE, 3, 6, 77, 1234, [0.5, -1.25])
    assert Prediction.parse(p.pack()) == p
    e = ErrorMsg(ErrorCode.BAD_MESSAGE, "nope")
    assert ErrorMsg.parse(e.pack()) == e


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x1c\x00\x1c", Image(np.zeros((2, 2, 1), np.uint8)).pack()[:-1],
                                     b"\x05" + Image(np.zeros((2, 2, 1), np.uint8)).pack()[1:]])
def test_bad_image_payloads_raise_bad_message(payload):
    with pytest.raises(FrameError) as info:
        Image.parse(payload)
    assert info.value.code == ErrorCode.BAD_MESSAGE


def _doc_examples() -> list[tuple[str, str]]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "serial-protocol.md").read_text()
    raws = [line[5:].strip() for line in text.splitlines() if line.startswith("raw  ")]
    wires = [line[5:].strip() for line in text.splitlines() if line.startswith("wire ")]
    assert len(raws) == len(wires) == 5
    return list(zip(raws, wires))


@pytest.mark.parametrize("index, frame", list(enumerate([  # section 5's examples are version-2 frames
    Frame(MsgType.HELLO, 1, Hello(1, 256, "fw", version=2).pack(), 2),
    Frame(MsgType.IMAGE, 2, Image(np.array([[0, 255], [17, 0]], np.uint8)).pack(), 2),
    Frame(MsgType.FEATURES, 3, Features(np.array([-3, 17, 5], np.int16), 0.125,
                                        bytes.fromhex("41 47 01 00 03 02 00 00 00 02 00 02 00"), 123456).pack(), 2),
    Frame(MsgType.PREDICTION, 3, Prediction(1, True, Reason.SERVER_UNAVAILABLE, 0, 2, 0, 1500).pack(), 2),
    Frame(MsgType.ERROR, SEQ_NONE, ErrorMsg(ErrorCode.BAD_FRAME, "CRC").pack(), 2),
])))
def test_worked_examples_in_the_protocol_doc(index, frame):
    raw, wire = _doc_examples()[index]
    assert pack_frame(frame).hex(" ") == wire
    assert cobs_decode(bytes.fromhex(wire)[1:-1]).hex(" ") == raw
    assert unpack_frame(bytes.fromhex(wire)[1:-1]) == frame


def test_version_3_example_in_the_protocol_doc():
    """Section 8: the FEATURES (logits to follow) and LOCAL pair, raw and wire, byte for byte."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "serial-protocol.md").read_text()
    lines = {tuple(line.split()[:2]): line.split(maxsplit=2)[2] for line in text.splitlines()
             if line.startswith(("FEATURES raw", "FEATURES wire", "LOCAL    raw", "LOCAL    wire"))}
    payload = bytes.fromhex("41 47 01 00 03 02 00 00 00 02 00 02 00")
    opening = Frame(MsgType.FEATURES, 5, Features(np.zeros(0, np.int16), 0.125, payload, 123456, True, 3).pack(), 3)
    local = Frame(MsgType.LOCAL, 5, Local(np.array([-3, 17, 5], np.int16), 2048).pack(), 3)
    for name, frame in (("FEATURES", opening), ("LOCAL", local)):
        wire = lines[(name, "wire")]
        assert pack_frame(frame).hex(" ") == wire
        assert cobs_decode(bytes.fromhex(wire)[1:-1]).hex(" ") == lines[(name, "raw")]
        assert unpack_frame(bytes.fromhex(wire)[1:-1]) == frame
    back = Features.parse(opening.payload)
    assert back.logits_follow and back.classes == 3 and back.payload == payload and back.logits_q.size == 0
    assert Local.parse(local.payload).logits_q.tolist() == [-3, 17, 5]


def test_crc_check_value_in_the_doc():
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_features_example_logits_are_the_documented_values():
    [_, _, (raw, _), _, _] = _doc_examples()
    feats = Features.parse(unpack_frame(cobs_encode(bytes.fromhex(raw))).payload)
    assert feats.local_logits().tolist() == [-0.375, 2.125, 0.625]
    assert feats.device_cycles == 123456 and len(feats.payload) == 13


def test_features_round_trip_and_dequantization():
    q = np.array([-32768, -1, 0, 5, 32767], np.int16)
    f = Features(q, 0.0625, b"AG-payload", 77)
    back = Features.parse(f.pack())
    assert back.logits_q.tolist() == q.tolist() and back.scale == 0.0625
    assert back.payload == b"AG-payload" and back.device_cycles == 77
    assert back.local_logits().dtype == np.float32
    assert back.local_logits().tolist() == [-2048.0, -0.0625, 0.0, 0.3125, 2047.9375]
    assert np.array_equal(dequantize_logits(q, 0.0625), back.local_logits())


def _features_bytes(**change) -> bytes:
    import struct

    head = dict(fmt=1, n=3, reserved=0, scale=0.5, cycles=0)
    head.update(change)
    return struct.pack("<BBHfI", head["fmt"], head["n"], head["reserved"], head["scale"],
                       head["cycles"]) + b"\x01\x00\x02\x00\x03\x00" + b"payload"


@pytest.mark.parametrize("payload, says", [
    (b"\x01\x03", "at least 12 bytes"),
    (_features_bytes(fmt=2), "logits format 2"),
    (_features_bytes(reserved=1), "reserved bytes"),
    (_features_bytes(scale=0.0), "positive finite"),
    (_features_bytes(scale=-1.0), "positive finite"),
    (_features_bytes(scale=float("nan")), "positive finite"),
    (_features_bytes(n=0), "announces 0 logits"),
    (_features_bytes(n=200), "announces 200 logits"),
])
def test_bad_features_payloads_raise_bad_message(payload, says):
    with pytest.raises(FrameError, match=says) as info:
        Features.parse(payload)
    assert info.value.code == ErrorCode.BAD_MESSAGE


# --- errata of the version-1 page, each pinned by a test -----------------------------------------
def test_hello_reply_is_12_plus_128_bytes_and_min_max_rx_is_140():
    longest = HelloReply(1, 28, 28, 10, MAX_PAYLOAD, "m" * 300).pack()
    assert len(HelloReply(1, 28, 28, 10, MAX_PAYLOAD, "").pack()) == 12
    assert len(longest) == 140 == MIN_MAX_RX
    assert len(ErrorMsg(ErrorCode.INTERNAL, "x" * 300).pack()) == 130


def test_utf8_fields_are_cut_on_a_character_boundary():
    reply = HelloReply(1, 28, 28, 10, MAX_PAYLOAD, "é" * 100).pack()  # 2 bytes each: 64 fit in 128
    assert HelloReply.parse(reply).model == "é" * 64
    assert Hello.parse(Hello(0, 0, "ü" * 40).pack()).firmware == "ü" * 32


def test_fashion_mnist_image_frame_is_803_stuffed_805_on_the_wire(fashion_test):
    # Fashion-MNIST's black background breaks every run of non-zero bytes before 254: overhead 1
    wire = pack_frame(Frame(MsgType.IMAGE, 0, Image(fashion_test.images[0]).pack()))
    assert len(cobs_decode(wire[1:-1])) == 802
    assert len(wire) - 2 == 803 and len(wire) == 805
    worst = pack_frame(Frame(MsgType.IMAGE, 0xFFFE, Image(np.full((28, 28, 1), 7, np.uint8)).pack()))
    assert len(worst) == 802 + 4 + 2  # no zero anywhere: one code byte per 254 bytes


def test_payload_over_max_whose_chunk_still_fits_is_bad_message_with_its_seq():
    length = MAX_PAYLOAD + 40  # all zeros: stuffing costs one byte per zero, nothing more
    body = HEADER.pack(2, MsgType.IMAGE, 0x0203, length) + bytes(length)
    body += zlib.crc32(body).to_bytes(4, "little")
    chunk = cobs_encode(body)
    assert len(chunk) <= MAX_ENCODED
    [err] = FrameReader().feed(b"\x00" + chunk + b"\x00")
    assert err.code == ErrorCode.BAD_MESSAGE and err.seq == 0x0203 and "MAX_PAYLOAD" in str(err)


@pytest.mark.parametrize("max_rx", [1, 40, MIN_MAX_RX - 1])
def test_hello_max_rx_below_the_minimum_is_refused(max_rx):
    with pytest.raises(FrameError, match="below the minimum 140") as info:
        Hello.parse(Hello(0, max_rx).pack())
    assert info.value.code == ErrorCode.BAD_MESSAGE
    assert Hello.parse(Hello(0, MIN_MAX_RX).pack()).max_rx == MIN_MAX_RX
    assert Hello.parse(Hello(0, 0).pack()).max_rx == 0


@pytest.mark.parametrize("payload, says", [
    (bytes([2, 0x02, 0, 0]), "reserved bits"),
    (bytes([2, 0x81, 0, 0]), "reserved bits"),
    (bytes([2, 0, 0, 0]) + b"fw\xff\xfe", "not UTF-8"),
    (bytes([2, 0, 0, 0]) + b"x" * 65, "4..68 bytes"),
])
def test_hello_strictness(payload, says):
    with pytest.raises(FrameError, match=says) as info:
        Hello.parse(payload)
    assert info.value.code == ErrorCode.BAD_MESSAGE


def test_image_reserved_byte_must_be_zero():
    payload = bytearray(Image(np.zeros((2, 2, 1), np.uint8)).pack())
    payload[1] = 1
    with pytest.raises(FrameError, match="reserved byte"):
        Image.parse(bytes(payload))


def test_version_1_frames_still_parse_and_version_4_does_not():
    v1 = Frame(MsgType.HELLO, 4, Hello(0, 0, "old", version=1).pack(), version=1)
    wire = pack_frame(v1)
    assert cobs_decode(wire[1:-1])[0] == 1
    assert unpack_frame(wire[1:-1]) == v1
    body = HEADER.pack(4, MsgType.HELLO, 9, 0)
    body += zlib.crc32(body).to_bytes(4, "little")
    [err] = FrameReader().feed(b"\x00" + cobs_encode(body) + b"\x00")
    assert err.code == ErrorCode.BAD_VERSION and err.seq == 9 and "speaks 1, 2 and 3" in str(err)
