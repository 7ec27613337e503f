"""Serial protocol version 3 through a pty pair: FEATURES whose logits follow in a LOCAL frame.

The pair is one request: the FEATURES goes to the server at once and gets no answer of its own, the
LOCAL gets the PREDICTION, the same one a version-2 FEATURES with the logits inside would get.
"""

from __future__ import annotations

import numpy as np

from agilenn.device_agent.agent import Agent
from agilenn.device_agent.framing import ErrorCode, Frame, MsgType, pack_frame
from agilenn.device_agent.mcu_sim import FeaturesMaker
from agilenn.device_agent.messages import ErrorMsg, Features, Hello, Local, Prediction, Reason
from agilenn.models import load_bundle


def _ask(link, *frames: Frame, expect_answers: int = 1) -> list[Frame]:
    for f in frames:
        link.send_raw(pack_frame(f))
    answers = []
    for _ in range(expect_answers):
        event = link.receive(20)
        assert isinstance(event, Frame), event
        answers.append(event)
    return answers


def _split(f: Features, seq: int) -> tuple[Frame, Frame]:
    """The version-3 pair for a version-2 FEATURES: format 0 with the payload, then LOCAL with the logits."""
    opening = Features(np.zeros(0, np.int16), f.scale, f.payload, 1000, logits_follow=True, classes=f.classes)
    return Frame(MsgType.FEATURES, seq, opening.pack(), 3), Frame(MsgType.LOCAL, seq, Local(f.logits_q, 200).pack(), 3)


def _error_code(frame: Frame) -> int:
    assert frame.type == MsgType.ERROR, frame
    return ErrorMsg.parse(frame.payload).code


def test_features_then_local_answers_as_version_2_would(serial_agent, server, synthetic_bundle, fashion_test):
    maker = FeaturesMaker(load_bundle(synthetic_bundle))
    with Agent(synthetic_bundle, server.address, deadline_ms=30_000) as agent:
        assert agent.wait_connected(30)
        link, bridge = serial_agent(agent)
        hello = _ask(link, Frame(MsgType.HELLO, 1, Hello(0, 0, "v3", version=3).pack(), 3))[0]
        assert hello.type == MsgType.HELLO_REPLY and hello.version == 3
        for seq, image in enumerate(fashion_test.images[:8], start=2):
            f = maker(image)
            v2 = Prediction.parse(_ask(link, Frame(MsgType.FEATURES, 100 + seq, f.pack(), 2))[0].payload)
            answer = _ask(link, *_split(f, seq))[0]  # exactly one answer for the pair, to the LOCAL
            assert answer.type == MsgType.PREDICTION and answer.seq == seq and answer.version == 3
            v3 = Prediction.parse(answer.payload)
            assert (v3.label, v3.degraded, v3.channels_sent, v3.payload_bytes) == \
                   (v2.label, v2.degraded, v2.channels_sent, v2.payload_bytes)
            assert not v3.degraded
        assert bridge.counts["features"] == 16 and bridge.counts["errors"] == 0
        # the device's cost arrives in two parts; the bridge records the whole device part
        assert bridge.device_cycles[-1] == 1200


def test_a_resent_pair_is_answered_again_without_a_second_inference(serial_agent, server, synthetic_bundle,
                                                                    fashion_test):
    maker = FeaturesMaker(load_bundle(synthetic_bundle))
    with Agent(synthetic_bundle, server.address, deadline_ms=30_000) as agent:
        assert agent.wait_connected(30)
        link, bridge = serial_agent(agent)
        opening, local = _split(maker(fashion_test.images[0]), 7)
        first = _ask(link, opening, local)[0]
        # the MCU timed out and resends both: the same answer, nothing new sent to the server
        again = _ask(link, opening, local)[0]
        assert again.payload == first.payload and again.seq == 7
        assert bridge.counts["features"] == 1 and bridge.counts["retransmissions"] == 2
        # a FEATURES repeated while its LOCAL is still to come starts nothing either
        opening, local = _split(maker(fashion_test.images[1]), 8)
        answer = _ask(link, opening, opening, local)[0]
        assert answer.type == MsgType.PREDICTION and answer.seq == 8
        assert bridge.counts["features"] == 2 and bridge.counts["retransmissions"] == 3


def test_local_answers_from_the_mcus_logits_when_the_server_is_away(serial_agent, synthetic_bundle, fashion_test):
    maker = FeaturesMaker(load_bundle(synthetic_bundle))
    with Agent(synthetic_bundle, "127.0.0.1:1", connect_timeout_s=0.2) as agent:  # nothing listens there
        link, _ = serial_agent(agent)
        f = maker(fashion_test.images[0])
        pred = Prediction.parse(_ask(link, *_split(f, 3))[0].payload)
        assert pred.degraded and pred.reason == Reason.SERVER_UNAVAILABLE and pred.payload_bytes == 0
        assert pred.label == int(np.argmax(f.local_logits()))


def test_version_3_mistakes_are_refused_with_their_seq(serial_agent, synthetic_bundle, fashion_test):
    bundle = load_bundle(synthetic_bundle)
    f = FeaturesMaker(bundle)(fashion_test.images[0])
    with Agent(synthetic_bundle, None) as agent:
        link, bridge = serial_agent(agent)
        opening, local = _split(f, 20)
        # a LOCAL that no FEATURES announced (or whose FEATURES was damaged on the line): send both again
        assert _error_code(_ask(link, local)[0]) == ErrorCode.MISSING_FEATURES
        # format 0 does not exist in version 2, LOCAL neither
        v2_opening = Frame(MsgType.FEATURES, 21, opening.payload, 2)
        assert _error_code(_ask(link, v2_opening)[0]) == ErrorCode.BAD_MESSAGE
        assert _error_code(_ask(link, Frame(MsgType.LOCAL, 22, local.payload, 2))[0]) == ErrorCode.UNKNOWN_TYPE
        # a FEATURES for another model is refused at once; its LOCAL then finds nothing waiting
        other = bytearray(f.payload)
        other[1] ^= 0x5A
        bad_opening = Frame(MsgType.FEATURES, 23, Features(np.zeros(0, np.int16), f.scale, bytes(other), 0, True,
                                                           f.classes).pack(), 3)
        refused = _ask(link, bad_opening)[0]
        assert _error_code(refused) == ErrorCode.BAD_MESSAGE and refused.seq == 23
        assert _error_code(_ask(link, Frame(MsgType.LOCAL, 23, local.payload, 3))[0]) == ErrorCode.MISSING_FEATURES
        # a LOCAL with another number of logits than its FEATURES announced
        opening, _ = _split(f, 24)
        short = Frame(MsgType.LOCAL, 24, Local(f.logits_q[:5]).pack(), 3)
        link.send_raw(pack_frame(opening))
        assert _error_code(_ask(link, short)[0]) == ErrorCode.BAD_MESSAGE
        # a wrong logit count in the FEATURES itself
        wrong_n = Frame(MsgType.FEATURES, 25, Features(np.zeros(0, np.int16), f.scale, f.payload, 0, True, 7).pack(), 3)
        assert _error_code(_ask(link, wrong_n)[0]) == ErrorCode.BAD_MESSAGE
        assert bridge.counts["features"] == 0
        # after all that, a good pair still works
        good = _ask(link, *_split(f, 26))[0]
        assert good.type == MsgType.PREDICTION and good.seq == 26 and bridge.counts["features"] == 1


def test_the_simulated_mcu_survives_noise_and_corruption_in_version_3(serial_agent, server, synthetic_bundle,
                                                                      fashion_test):
    """Junk between frames and flipped bits inside them: a damaged FEATURES gets MISSING_FEATURES for
    its LOCAL and the pair goes again, so every image is still answered once, in full."""
    from agilenn.device_agent.mcu_sim import McuSim

    bundle = load_bundle(synthetic_bundle)
    n = 30
    with Agent(synthetic_bundle, server.address, deadline_ms=30_000) as agent:
        assert agent.wait_connected(30)
        link, bridge = serial_agent(agent)
        sim = McuSim(link, timeout_s=40, features=FeaturesMaker(bundle), local_follows=True, noise=0.3, corrupt=0.2,
                     seed=5)
        sim.handshake()
        report = sim.run(fashion_test.images[:n], fashion_test.labels[:n])
    assert report.ok and report.predictions == n and report.degraded == 0, report.as_dict()
    assert report.corrupted_frames > 0 and report.retransmissions > 0
    assert bridge.counts["features"] == n


def test_a_new_features_abandons_the_one_waiting_for_its_local(serial_agent, synthetic_bundle, fashion_test):
    maker = FeaturesMaker(load_bundle(synthetic_bundle))
    with Agent(synthetic_bundle, None) as agent:
        link, bridge = serial_agent(agent)
        first, _ = _split(maker(fashion_test.images[0]), 30)
        second, second_local = _split(maker(fashion_test.images[1]), 31)
        answer = _ask(link, first, second, second_local)[0]  # nothing for seq 30, then 31's answer
        assert answer.type == MsgType.PREDICTION and answer.seq == 31
        assert link.receive(0.5) is None and bridge.counts["features"] == 1
