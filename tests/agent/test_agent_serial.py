"""The serial bridge through a pty pair: agent <-> MCU simulator, with line noise and corrupt frames."""

from __future__ import annotations


import numpy as np

from agilenn.device_agent.agent import Agent
from agilenn.device_agent.framing import SEQ_NONE, ErrorCode, Frame, FrameError, MsgType, pack_frame
from agilenn.device_agent.mcu_sim import McuSim
from agilenn.device_agent.messages import ErrorMsg, Hello, HelloReply, Image, Prediction
from agilenn.models import load_bundle


def test_round_trip_with_noise_and_corruption(serial_agent, server, synthetic_bundle, fashion_test,
                                              offline_reference):
    n = 60
    images, labels = fashion_test.images[:n], fashion_test.labels[:n]
    ref = offline_reference(load_bundle(synthetic_bundle), images)
    with Agent(synthetic_bundle, server.address, deadline_ms=30_000) as agent:
        assert agent.wait_connected(30)
        mcu_link, bridge = serial_agent(agent)
        sim = McuSim(mcu_link, noise=0.5, corrupt=0.15, timeout_s=20, seed=7)
        hello = sim.handshake()
        report = sim.run(images, labels)
    assert (hello.channels, hello.height, hello.width, hello.num_classes) == (1, 28, 28, 10)
    assert hello.model == "synthetic:1"
    assert report.ok, report.as_dict()
    assert report.sent == report.answered == report.predictions == n
    assert report.noise_chunks > 0 and report.corrupted_frames > 0
    # Every corrupt frame was answered with an error (junk chunks too, unless the junk was all delimiters).
    assert report.unreadable_errors >= report.corrupted_frames
    assert report.degraded == 0
    assert report.answers == ref["pred"].tolist()  # the right answer for every image
    assert report.accuracy == float(np.mean(ref["pred"] == labels))
    assert bridge.counts["images"] == n  # one inference per image: retransmissions were served from the cache


def test_protocol_errors_name_their_frame(serial_agent, synthetic_bundle):
    with Agent(synthetic_bundle, None) as agent:  # local-only: answers come back degraded
        link, _ = serial_agent(agent)

        def ask(frame_bytes):
            link.send_raw(frame_bytes)
            event = link.receive(10)
            assert isinstance(event, Frame), event
            return event

        reply = ask(pack_frame(Frame(MsgType.HELLO, 5, Hello(1).pack())))
        assert reply.type == MsgType.HELLO_REPLY and reply.seq == 5
        assert not HelloReply.parse(reply.payload).server_connected

        wrong = ask(pack_frame(Frame(MsgType.IMAGE, 6, Image(np.zeros((32, 32, 3), np.uint8)).pack())))
        assert wrong.type == MsgType.ERROR and wrong.seq == 6
        assert ErrorMsg.parse(wrong.payload).code == ErrorCode.BAD_MESSAGE

        unknown = ask(pack_frame(Frame(0x42, 7, b"")))
        assert unknown.type == MsgType.ERROR and unknown.seq == 7
        assert ErrorMsg.parse(unknown.payload).code == ErrorCode.UNKNOWN_TYPE

        noise = ask(b"\x00\x13\x37\xfe\x00")
        assert noise.type == MsgType.ERROR and noise.seq == SEQ_NONE
        assert ErrorMsg.parse(noise.payload).code == ErrorCode.BAD_FRAME

        ok = ask(pack_frame(Frame(MsgType.IMAGE, 8, Image(np.zeros((28, 28, 1), np.uint8)).pack())))
        pred = Prediction.parse(ok.payload)
        assert ok.type == MsgType.PREDICTION and ok.seq == 8
        assert pred.degraded and len(pred.logits) == 10  # HELLO asked for logits
        assert 0 <= pred.label < 10

        refused = ask(pack_frame(Frame(MsgType.HELLO, 9, Hello(1, 40).pack())))  # below the 140-byte minimum
        assert refused.type == MsgType.ERROR and ErrorMsg.parse(refused.payload).code == ErrorCode.BAD_MESSAGE


def test_answers_are_local_when_no_server(serial_agent, synthetic_bundle, fashion_test, offline_reference):
    images = fashion_test.images[:10]
    ref = offline_reference(load_bundle(synthetic_bundle), images)
    with Agent(synthetic_bundle, "127.0.0.1:1", connect_timeout_s=0.2) as agent:  # nothing listens there
        link, _ = serial_agent(agent)
        report = McuSim(link, timeout_s=20).run(images)
    assert report.ok and report.degraded == 10
    assert report.answers == ref["local_pred"].tolist()


def test_garbled_bytes_never_raise(serial_agent, synthetic_bundle):
    rng = np.random.default_rng(0)
    with Agent(synthetic_bundle, None) as agent:
        link, bridge = serial_agent(agent)
        link.send_raw(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
        link.send(Frame(MsgType.HELLO, 9, Hello().pack()))
        while True:  # every garbled chunk gets its error, then the HELLO its reply
            event = link.receive(10)
            assert event is not None and not isinstance(event, FrameError)
            if event.type == MsgType.HELLO_REPLY:
                assert event.seq == 9
                break
            assert event.type == MsgType.ERROR
