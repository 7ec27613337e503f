"""Budget-aware merging in the agent: alpha for the channel count sent, and nothing sent below break-even
(reason "budget"), for images (Agent.infer) and for an MCU's FEATURES through the serial bridge."""

from __future__ import annotations

import numpy as np
import pytest

from agilenn.device_agent.agent import Agent
from agilenn.device_agent.device_model import DevicePart
from agilenn.device_agent.framing import Frame, MsgType, pack_frame
from agilenn.device_agent.messages import FLAG_WANT_LOGITS, Features, Hello, Prediction, Reason
from agilenn.models import load_bundle
from agilenn.models.synthetic import make_random_bundle
from agilenn.server.testing import running_server

MIN_CHANNELS = 3
ALPHAS = [1.0, 0.95, 0.9, 0.7, 0.6, 0.5, 0.2]  # 6 remote channels: counts 0..6, all different


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("budget") / "b", default_coder="raw",
                              merge={"alpha_by_channels": ALPHAS, "min_channels": MIN_CHANNELS})


@pytest.fixture(scope="module")
def calibrated_server(calibrated):
    with running_server(calibrated, no_batching=True) as srv:
        yield srv


def _remote_logits(bundle, payload: bytes) -> np.ndarray:
    from agilenn.device_agent.device_model import single_thread_session
    from agilenn.models.bundle import REMOTE_INPUT

    feats = bundle.codec().decode(payload).features[None]
    return single_thread_session(bundle.onnx_path("remote")).run(None, {REMOTE_INPUT: feats})[0][0]


def _budget_for(bundle, image, channels: int) -> int:
    """A byte budget that admits exactly ``channels`` channels of this image (raw coder: sizes grow per channel)."""
    codec = bundle.codec()
    indices = DevicePart(bundle).run(image).indices(codec)
    return len(codec.encode_indices(indices, None, channels))


def test_below_break_even_nothing_is_sent_and_the_answer_says_budget(calibrated, calibrated_server, fashion_test):
    bundle = load_bundle(calibrated)
    image = fashion_test.images[0]
    with Agent(bundle, calibrated_server.address, deadline_ms=60_000,
               max_payload_bytes=_budget_for(bundle, image, MIN_CHANNELS - 1)) as agent:
        assert agent.wait_connected(30)
        r = agent.infer(image)
    assert r.degraded and r.reason == "budget" and "break-even 3" in r.detail and "2 of 6" in r.detail
    assert r.payload_bytes == 0 and r.channels_sent == 0 and r.remote_logits is None
    assert r.timings.network_ms == 0 and r.timings.server_total_ms is None  # no round trip
    np.testing.assert_array_equal(r.merged_logits, r.local_logits)
    assert r.prediction == r.local_prediction


@pytest.mark.parametrize("channels", [MIN_CHANNELS, 5, 6])
def test_at_or_above_break_even_the_merge_uses_that_counts_alpha(calibrated, calibrated_server, fashion_test,
                                                                 channels):
    bundle = load_bundle(calibrated)
    image = fashion_test.images[1]
    budget = _budget_for(bundle, image, channels)
    with Agent(bundle, calibrated_server.address, deadline_ms=60_000, max_payload_bytes=budget) as agent:
        assert agent.wait_connected(30)
        r = agent.infer(image)
    assert not r.degraded and r.reason == "none" and r.channels_sent == channels and r.payload_bytes == budget
    a = np.float32(ALPHAS[channels])
    np.testing.assert_array_equal(r.merged_logits, a * r.local_logits + (np.float32(1) - a) * r.remote_logits)
    if channels < 6:  # the full-payload alpha would give other logits
        assert not np.allclose(r.merged_logits, bundle.merge(r.local_logits, r.remote_logits))


def test_mcu_features_below_break_even_are_not_forwarded(serial_agent, calibrated, calibrated_server, fashion_test):
    bundle = load_bundle(calibrated)
    codec, device = bundle.codec(), DevicePart(bundle)
    with Agent(bundle, calibrated_server.address, deadline_ms=60_000) as agent:
        assert agent.wait_connected(30)
        link, bridge = serial_agent(agent)
        link.send_raw(pack_frame(Frame(MsgType.HELLO, 1, Hello(FLAG_WANT_LOGITS, 0, "t", 2).pack(), 2)))
        assert link.receive(20).type == MsgType.HELLO_REPLY
        answers = {}
        for seq, channels in enumerate((0, MIN_CHANNELS - 1, MIN_CHANNELS, 6), start=2):
            out = device.run(fashion_test.images[seq])
            q = np.clip(np.round(out.local_logits / 2 ** -8), -32768, 32767).astype(np.int16)
            payload = codec.encode(out.remote_features, None, channels)  # the MCU's payload_cap cut it here
            f = Features(q, 2 ** -8, payload)
            link.send_raw(pack_frame(Frame(MsgType.FEATURES, seq, f.pack(), 2)))
            reply = link.receive(20)
            assert isinstance(reply, Frame) and reply.type == MsgType.PREDICTION and reply.seq == seq, reply
            answers[channels] = (Prediction.parse(reply.payload), f, payload)
    for channels in (0, MIN_CHANNELS - 1):
        pred, f, _ = answers[channels]
        assert pred.degraded and pred.reason == Reason.BUDGET and pred.payload_bytes == 0 and pred.channels_sent == 0
        assert pred.logits == f.local_logits().tolist()  # the MCU's own logits
    for channels in (MIN_CHANNELS, 6):
        pred, f, payload = answers[channels]
        assert not pred.degraded and pred.channels_sent == channels and pred.payload_bytes == len(payload)
        a = np.float32(ALPHAS[channels])
        remote = _remote_logits(bundle, payload)
        expected = a * f.local_logits() + (np.float32(1) - a) * remote
        # the server's logits come back as int16 with scale peak/32767 (lean stream default): half a step each
        step = float(np.abs(remote).max()) / 32767
        np.testing.assert_allclose(pred.logits, expected, rtol=0, atol=(1 - float(a)) * step / 2 + 1e-6)
    assert bridge.counts["features"] == 4


def test_bundle_without_merge_always_sends(synthetic_bundle, server, fashion_test):
    with Agent(synthetic_bundle, server.address, deadline_ms=60_000, max_payload_bytes=3) as agent:  # the header alone
        assert agent.wait_connected(30)
        r = agent.infer(fashion_test.images[0])
    assert not r.degraded and r.channels_sent == 0 and r.payload_bytes == 3


def test_every_reason_is_in_the_serial_protocol_table():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "serial-protocol.md").read_text()
    for code, name in Reason.NAMES.items():
        assert f"| {code} | {name} |" in doc, name
    assert "reason `budget`" in (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
