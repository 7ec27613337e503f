"""The C serial framing (firmware/csrc/agn_frame.c) against device_agent/framing.py, byte for byte:
CRC check value, the doc's worked frames, random frames both ways, hostile chunks, the reader."""

import zlib

import numpy as np
import pytest
from agn_c_helpers import (AGN_ERR_ARG, AGN_ERR_FRAME, AGN_ERR_NOSPACE, AGN_ERR_TOO_LONG, AGN_ERR_VERSION, AGN_OK,
                           CLib, build_shared)

from agilenn.device_agent import framing
from agilenn.device_agent.framing import Frame, FrameError, FrameReader, cobs_encode, pack_frame, unpack_frame


@pytest.fixture(scope="module")
def clib(tmp_path_factory):
    return CLib(build_shared(tmp_path_factory.mktemp("agn")))


def test_crc_check_value(clib):
    assert clib.crc32(b"123456789") == 0xCBF43926
    data = bytes(range(256)) * 3
    assert clib.crc32(data) == zlib.crc32(data)
    assert clib.crc32(data[100:], clib.crc32(data[:100])) == zlib.crc32(data)  # continues like zlib


# docs/serial-protocol.md section 5 (HELLO and ERROR examples, version 1)
DOC_FRAMES = [
    (1, 0x01, 1, bytes.fromhex("01 01 00 01 66 77"), "00 04 01 01 01 02 06 03 01 01 08 01 66 77 e5 8f 6b 02 00"),
    (1, 0x83, 0xFFFF, bytes.fromhex("01 00 43 52 43"), "00 06 01 83 ff ff 05 02 01 08 43 52 43 f1 cc e3 b2 00"),
]


@pytest.mark.parametrize("version, mtype, seq, payload, wire", DOC_FRAMES)
def test_doc_frames(clib, version, mtype, seq, payload, wire):
    st, out = clib.frame_encode(version, mtype, seq, payload)
    assert st == AGN_OK and out == bytes.fromhex(wire)
    st, frame, got = clib.frame_decode(out[1:-1])
    assert st == AGN_OK and (frame.version, frame.type, frame.seq, got) == (version, mtype, seq, payload)


def random_payload(rng, n):
    kind = rng.integers(0, 3)
    if kind == 0:
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if kind == 1:  # zero-rich: many short COBS blocks
        return (rng.integers(0, 3, n, dtype=np.uint8) * rng.integers(0, 256, n, dtype=np.uint8)).tobytes()
    return rng.integers(1, 256, n, dtype=np.uint8).tobytes()  # no zeros: 254-byte blocks


def test_c_frames_equal_python_frames(clib):
    rng = np.random.default_rng(3)
    sizes = [0, 1, 243, 244, 253, 254, 255, 498, 507, 508, 509, 1000, framing.MAX_PAYLOAD]
    sizes += rng.integers(0, 3000, 150).tolist()
    for n in sizes:
        payload = random_payload(rng, n)
        version = int(rng.integers(1, 3))
        mtype, seq = int(rng.integers(0, 256)), int(rng.integers(0, 0x10000))
        st, wire = clib.frame_encode(version, mtype, seq, payload)
        assert st == AGN_OK
        assert wire == pack_frame(Frame(mtype, seq, payload, version)), n
        st, frame, got = clib.frame_decode(wire[1:-1])
        assert st == AGN_OK and got == payload and (frame.type, frame.seq, frame.version) == (mtype, seq, version)
        # the Python receiver takes the C frame
        assert unpack_frame(wire[1:-1]) == Frame(mtype, seq, payload, version)


def test_cobs_worst_case_bound(clib):
    for n in (1, 253, 254, 255, 508, 1000):
        data = b"\x07" * n
        st, out = clib.cobs_encode(data)
        assert st == AGN_OK and out == cobs_encode(data) and len(out) <= n + n // 254 + 1


def test_encode_checks_sizes(clib):
    payload = bytes(range(1, 200))
    wire = pack_frame(Frame(2, 7, payload, 1))
    for cap in (0, 1, 2, len(wire) - 1):
        assert clib.frame_encode(1, 2, 7, payload, out_cap=cap)[0] == AGN_ERR_NOSPACE
    assert clib.frame_encode(1, 2, 7, payload, out_cap=len(wire)) == (AGN_OK, wire)
    assert clib.frame_encode(1, 2, 7, b"\x01" * (framing.MAX_PAYLOAD + 1), out_cap=20000)[0] == AGN_ERR_ARG


def python_verdict(chunk):
    try:
        unpack_frame(chunk)
        return "ok"
    except FrameError as exc:
        return {framing.ErrorCode.BAD_FRAME: "frame", framing.ErrorCode.BAD_VERSION: "version",
                framing.ErrorCode.BAD_MESSAGE: "too_long"}[exc.code]


C_VERDICT = {AGN_OK: "ok", AGN_ERR_FRAME: "frame", AGN_ERR_VERSION: "version", AGN_ERR_TOO_LONG: "too_long"}


def test_hostile_chunks_get_the_same_verdict_as_python(clib):
    rng = np.random.default_rng(9)
    good = [pack_frame(Frame(int(rng.integers(0, 256)), int(rng.integers(0, 0xFFFF)),
                             random_payload(rng, int(rng.integers(0, 600))), 1))[1:-1] for _ in range(40)]
    chunks = list(good)
    for chunk in good:
        for _ in range(20):
            b = bytearray(chunk)
            what = rng.integers(0, 4)
            if what == 0:  # flip bits
                for _ in range(int(rng.integers(1, 4))):
                    b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
            elif what == 1:  # truncate
                b = b[: int(rng.integers(0, len(b)))]
            elif what == 2:  # append junk
                b += rng.integers(0, 256, int(rng.integers(1, 10)), dtype=np.uint8).tobytes()
            else:  # pure noise
                b = bytearray(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes())
            chunks.append(bytes(b))
    # a good CRC around another version, and around a payload over MAX_PAYLOAD
    raw = bytes([9, 2, 5, 0, 1, 0, 0x41])
    chunks.append(cobs_encode(raw + zlib.crc32(raw).to_bytes(4, "little")))
    raw = bytes([1, 2, 6, 0]) + (framing.MAX_PAYLOAD + 1).to_bytes(2, "little") + bytes(framing.MAX_PAYLOAD + 1)
    chunks.append(cobs_encode(raw + zlib.crc32(raw).to_bytes(4, "little")))
    verdicts = set()
    for chunk in chunks:
        st, frame, _ = clib.frame_decode(chunk)
        expected = python_verdict(chunk)
        assert C_VERDICT.get(st) == expected, (chunk.hex(), st, expected)
        if expected in ("version", "too_long"):
            assert frame.seq == unpack_seq(chunk)
        verdicts.add(expected)
    assert verdicts == {"ok", "frame", "version", "too_long"}


def unpack_seq(chunk):
    try:
        unpack_frame(chunk)
    except FrameError as exc:
        return exc.seq


def test_decode_bounds_its_output_and_works_in_place(clib):
    payload = bytes(i % 7 for i in range(300))  # zeros every 7 bytes: decoding shrinks the chunk
    chunk = pack_frame(Frame(2, 1, payload, 2))[1:-1]
    raw_len = 6 + 300 + 4
    assert clib.frame_decode(chunk, work_cap=raw_len - 1)[0] == AGN_ERR_NOSPACE
    assert clib.frame_decode(chunk, work_cap=raw_len)[2] == payload
    st, frame, got = clib.frame_decode(chunk, in_place=True)
    assert st == AGN_OK and got == payload and frame.seq == 1


def test_reader_splits_chunks_like_the_python_reader(clib):
    rng = np.random.default_rng(1)
    frames = [pack_frame(Frame(2, i, random_payload(rng, int(rng.integers(0, 300))), 1)) for i in range(20)]
    noise = rng.integers(0, 256, 500, dtype=np.uint8).tobytes()
    stream = b"".join(f + noise[i * 7: i * 7 + int(rng.integers(0, 30))] for i, f in enumerate(frames))
    stream += b"\x11" * 700 + b"\x00" + frames[0]  # one chunk too long for a 600-byte buffer
    cap = 600
    c_events = clib.read_chunks(stream, cap)
    py_events = []
    for event in FrameReader(max_encoded=cap).feed(stream):
        if isinstance(event, FrameError) and event.code == framing.ErrorCode.TOO_LONG:
            py_events.append(("too_long", None))
        else:
            py_events.append(("chunk", None))
    assert [kind for kind, _ in c_events] == [kind for kind, _ in py_events]
    decoded = [clib.frame_decode(chunk) for kind, chunk in c_events if kind == "chunk"]
    good = [payload for st, _, payload in decoded if st == AGN_OK]
    assert good[:20] == [unpack_frame(f[1:-1]).payload for f in frames] and len(good) == 21
