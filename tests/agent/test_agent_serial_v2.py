"""Serial protocol version 2 through a pty pair: FEATURES, version-1 compatibility, and the errata."""

from __future__ import annotations

import signal

import numpy as np

from agilenn.codec import FeatureCodec
from agilenn.device_agent.agent import Agent
from agilenn.device_agent.framing import HEADER, SEQ_NONE, ErrorCode, Frame, MsgType, pack_frame
from agilenn.device_agent.mcu_sim import FeaturesMaker, McuSim
from agilenn.device_agent.messages import (ErrorMsg, Features, Hello, HelloReply, Image, Prediction, Reason,
                                           dequantize_logits)
from agilenn.models import load_bundle


def _ask(link, frame_bytes: bytes) -> Frame:
    link.send_raw(frame_bytes)
    event = link.receive(20)
    assert isinstance(event, Frame), event
    return event


def _error_code(frame: Frame) -> int:
    assert frame.type == MsgType.ERROR, frame
    return ErrorMsg.parse(frame.payload).code


def _remote_logits(bundle, payload: bytes) -> np.ndarray:
    """What the server's remote part makes of a payload: decode, remote.onnx, one at a time."""
    from agilenn.device_agent.device_model import single_thread_session
    from agilenn.models.bundle import REMOTE_INPUT

    remote = single_thread_session(bundle.onnx_path("remote"))
    feats = bundle.codec().decode(payload).features[None]
    return remote.run(None, {REMOTE_INPUT: feats.astype(np.float32)})[0][0]


def test_features_are_forwarded_and_merged(serial_agent, server, synthetic_bundle, fashion_test):
    bundle = load_bundle(synthetic_bundle)
    n = 25
    images, labels = fashion_test.images[:n], fashion_test.labels[:n]
    maker = FeaturesMaker(bundle)
    with Agent(synthetic_bundle, server.address, deadline_ms=30_000) as agent:
        assert agent.wait_connected(30)
        link, bridge = serial_agent(agent)
        sim = McuSim(link, timeout_s=40, features=maker, noise=0.3, corrupt=0.1, seed=3)
        sim.handshake()
        report = sim.run(images, labels)
    assert report.ok and report.predictions == n and report.degraded == 0, report.as_dict()
    assert bridge.counts["features"] == n and bridge.counts["images"] == 0
    expected = []
    for image in images:
        f = maker(image)
        merged = bundle.merge(f.local_logits(), _remote_logits(bundle, f.payload))
        expected.append(int(np.argmax(merged)))
    assert report.answers == expected


def test_degraded_features_answer_carries_the_mcus_own_logits(serial_agent, synthetic_bundle, fashion_test):
    bundle = load_bundle(synthetic_bundle)
    maker = FeaturesMaker(bundle)
    with Agent(synthetic_bundle, "127.0.0.1:1", connect_timeout_s=0.2) as agent:  # nothing listens there
        link, _ = serial_agent(agent)
        assert _ask(link, pack_frame(Frame(MsgType.HELLO, 1, Hello(1, 0, "t").pack()))).type == MsgType.HELLO_REPLY
        for seq, image in enumerate(fashion_test.images[:5], start=2):
            f = maker(image)
            reply = _ask(link, pack_frame(Frame(MsgType.FEATURES, seq, f.pack())))
            assert reply.type == MsgType.PREDICTION and reply.seq == seq
            pred = Prediction.parse(reply.payload)
            assert pred.degraded and pred.reason == Reason.SERVER_UNAVAILABLE
            assert pred.channels_sent == 0 and pred.payload_bytes == 0
            local = dequantize_logits(f.logits_q, f.scale)
            assert pred.logits == local.tolist()  # the MCU's own logits, not scaled by alpha
            assert pred.label == int(np.argmax(local))


def test_version_1_mcu_is_answered_in_version_1(serial_agent, synthetic_bundle):
    with Agent(synthetic_bundle, None) as agent:
        link, _ = serial_agent(agent)
        hello = _ask(link, pack_frame(Frame(MsgType.HELLO, 1, Hello(0, 0, "v1", version=1).pack(), version=1)))
        assert hello.version == 1 and hello.type == MsgType.HELLO_REPLY
        assert HelloReply.parse(hello.payload).version == 1
        image = _ask(link, pack_frame(Frame(MsgType.IMAGE, 2, Image(np.zeros((28, 28, 1), np.uint8)).pack(),
                                            version=1)))
        assert image.version == 1 and image.type == MsgType.PREDICTION
        feats = Features(np.zeros(10, np.int16), 0.5, b"")
        v1_features = _ask(link, pack_frame(Frame(MsgType.FEATURES, 3, feats.pack(), version=1)))
        assert v1_features.version == 1 and v1_features.seq == 3
        assert _error_code(v1_features) == ErrorCode.UNKNOWN_TYPE


def test_strictness_errata_through_the_bridge(serial_agent, synthetic_bundle):
    bundle = load_bundle(synthetic_bundle)
    good = FeaturesMaker(bundle)(np.zeros((28, 28, 1), np.uint8))
    with Agent(synthetic_bundle, None) as agent:
        link, bridge = serial_agent(agent)
        # seq 0xFFFF is reserved: refused, not answered as a normal seq
        reserved = _ask(link, pack_frame(Frame(MsgType.IMAGE, SEQ_NONE, Image(np.zeros((28, 28, 1), np.uint8)).pack())))
        assert _error_code(reserved) == ErrorCode.BAD_MESSAGE and "0xFFFF" in ErrorMsg.parse(reserved.payload).detail
        # HELLO asking for version 1 inside a version-2 frame
        mixed = _ask(link, pack_frame(Frame(MsgType.HELLO, 4, Hello(0, 0, "x", version=1).pack())))
        assert _error_code(mixed) == ErrorCode.BAD_VERSION and mixed.seq == 4
        # max_rx below the minimum, reserved flag bits, a non-UTF-8 name
        for seq, payload in [(5, Hello(0, 40).pack()), (6, bytes([2, 0x80, 0, 0])), (7, bytes([2, 0, 0, 0, 0xC3]))]:
            answer = _ask(link, pack_frame(Frame(MsgType.HELLO, seq, payload)))
            assert _error_code(answer) == ErrorCode.BAD_MESSAGE and answer.seq == seq
        # FEATURES that are not the model's: wrong logit count, a payload of another shape (payload
        # version 1 spells the shape out, version 2 carries its check byte), no payload
        wrong_n = Features(np.zeros(7, np.int16), good.scale, good.payload)
        indices = bundle.codec().decode_indices(good.payload)[0]
        good_v1 = FeatureCodec.from_manifest(bundle.manifest, payload_version=1).encode_indices(indices)
        other_shape = bytearray(good_v1)
        other_shape[5] += 1  # channels_total
        other_levels = bytearray(good_v1)
        other_levels[4] += 1  # levels - 1
        other_model = bytearray(good.payload)
        other_model[1] ^= 0x5A  # the compact header's model check
        for seq, f in [(8, wrong_n), (9, Features(good.logits_q, good.scale, bytes(other_shape))),
                       (13, Features(good.logits_q, good.scale, bytes(other_levels))),
                       (14, Features(good.logits_q, good.scale, bytes(other_model))),
                       (10, Features(good.logits_q, good.scale, b"")), (11, Features(good.logits_q, good.scale, b"XY" * 9))]:
            answer = _ask(link, pack_frame(Frame(MsgType.FEATURES, seq, f.pack())))
            assert _error_code(answer) == ErrorCode.BAD_MESSAGE and answer.seq == seq
        assert bridge.counts["features"] == 0
        ok = _ask(link, pack_frame(Frame(MsgType.FEATURES, 12, good.pack())))
        assert ok.type == MsgType.PREDICTION and bridge.counts["features"] == 1
        old = _ask(link, pack_frame(Frame(MsgType.FEATURES, 15, Features(good.logits_q, good.scale, good_v1).pack())))
        assert old.type == MsgType.PREDICTION and bridge.counts["features"] == 2  # a version-1 device still works


def test_payload_longer_than_max_is_bad_message_on_the_link(serial_agent, synthetic_bundle):
    import zlib

    from agilenn.device_agent.framing import MAX_PAYLOAD, cobs_encode

    with Agent(synthetic_bundle, None) as agent:
        link, _ = serial_agent(agent)
        length = MAX_PAYLOAD + 20
        body = HEADER.pack(2, MsgType.IMAGE, 21, length) + bytes(length)
        body += zlib.crc32(body).to_bytes(4, "little")
        answer = _ask(link, b"\x00" + cobs_encode(body) + b"\x00")
        assert _error_code(answer) == ErrorCode.BAD_MESSAGE and answer.seq == 21


def test_keep_reading_for_own_seq_before_resending(serial_agent, synthetic_bundle, fashion_test):
    """Noise before every frame costs an error answer each, but no retransmission."""
    with Agent(synthetic_bundle, None) as agent:
        link, bridge = serial_agent(agent)
        sim = McuSim(link, noise=1.0, timeout_s=30, grace_s=5.0, seed=1)
        report = sim.run(fashion_test.images[:15])
    assert report.ok and report.noise_chunks == 16  # the HELLO got its junk too
    assert report.unreadable_errors >= 16
    assert report.retransmissions == 0 and bridge.counts["retransmissions"] == 0


def test_missed_deadlines_switch_to_server_unavailable(serial_agent, synthetic_bundle, fashion_test):
    """A hung server (SIGSTOP: connection open, no answers) costs 3 deadlines, then answers go local at once."""
    from agilenn.server.testing import running_server

    maker = FeaturesMaker(load_bundle(synthetic_bundle))
    with running_server(synthetic_bundle) as srv, \
            Agent(synthetic_bundle, srv.address, deadline_ms=400, backoff_max_s=0.2) as agent:
        assert agent.wait_connected(30)
        link, _ = serial_agent(agent)
        frames = [Frame(MsgType.FEATURES, seq, maker(image).pack()) for seq, image in enumerate(fashion_test.images[:6])]
        assert not Prediction.parse(_ask(link, pack_frame(frames[0])).payload).degraded
        srv.send_signal(signal.SIGSTOP)
        try:
            reasons = [Prediction.parse(_ask(link, pack_frame(f)).payload).reason for f in frames[1:5]]
        finally:
            srv.send_signal(signal.SIGCONT)
        assert reasons[:3] == [Reason.DEADLINE] * 3
        assert reasons[3] == Reason.SERVER_UNAVAILABLE
        assert agent.wait_connected(30)
        assert not Prediction.parse(_ask(link, pack_frame(frames[5])).payload).degraded
