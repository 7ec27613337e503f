"""The agent end to end through a real server (agilenn.server.testing.running_server)."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from agilenn.device_agent.agent import Agent
from agilenn.device_agent.client import ClientSecurity
from agilenn.models import load_bundle
from agilenn.models.synthetic import make_random_bundle
from agilenn.server.testing import running_server

N_EVAL = 500


def test_accuracy_equals_offline_evaluation(eval_bundle_dir, fashion_test, offline_reference):
    """Over 500 test images, prediction by prediction, the agent through a server == offline evaluation."""
    bundle = load_bundle(eval_bundle_dir)
    images, labels = fashion_test.images[:N_EVAL], fashion_test.labels[:N_EVAL]
    ref = offline_reference(bundle, images)
    with running_server(eval_bundle_dir, no_batching=True) as srv, \
            Agent(bundle, srv.address, deadline_ms=60_000, server_timings=True) as agent:
        assert agent.wait_connected(30), agent.client.state_detail
        results = [agent.infer(im) for im in images]
    assert not any(r.degraded for r in results), {r.reason for r in results}
    preds = np.array([r.prediction for r in results])
    assert np.array_equal(preds, ref["pred"])
    # int16 logits on the wire (the default): each remote logit within scale / 2 = max |logit| / 65534
    np.testing.assert_allclose(np.stack([r.merged_logits for r in results]), ref["merged"], rtol=1e-5, atol=1e-3)
    assert np.array_equal([r.local_prediction for r in results], ref["local_pred"])
    agent_acc = float(np.mean(preds == labels))
    assert agent_acc == float(np.mean(ref["pred"] == labels))
    assert all(r.channels_sent == r.channels_total == bundle.remote_channels for r in results)
    assert all(r.payload_bytes > 0 and r.timings.server_total_ms is not None for r in results)


def test_payload_version_1_for_an_older_server(server, synthetic_bundle, fashion_test):
    """--payload-version 1: the 13-byte header (what servers before 2026-11-27 read), the same body,
    the same answer; an MCU's version-2 payload is re-headed before it is forwarded."""
    image = fashion_test.images[0]
    with Agent(synthetic_bundle, server.address, deadline_ms=60_000) as new, \
            Agent(synthetic_bundle, server.address, deadline_ms=60_000, payload_version=1) as old:
        assert new.wait_connected(30) and old.wait_connected(30)
        v2, v1 = new.infer(image), old.infer(image)
        mcu_payload = new.codec.encode_indices(new.device.run(image).indices(new.codec))
        forwarded = old.codec.reheader(mcu_payload)
        via_serial = old.infer_features(v2.local_logits, mcu_payload)
    assert not v2.degraded and not v1.degraded and not via_serial.degraded
    assert v1.payload_bytes == v2.payload_bytes + 10 and v1.prediction == v2.prediction
    assert forwarded[:2] == b"AG" and forwarded[13:] == mcu_payload[3:]
    np.testing.assert_array_equal(v1.remote_logits, v2.remote_logits)


def test_byte_budget_drops_trailing_channels(server, synthetic_bundle, fashion_test):
    with Agent(synthetic_bundle, server.address, deadline_ms=60_000) as agent:
        assert agent.wait_connected(30)
        full = agent.infer(fashion_test.images[0])
        agent.max_payload_bytes = budget = full.payload_bytes // 2
        cut = agent.infer(fashion_test.images[0])
        agent.max_payload_bytes = 3  # the (compact) header alone: every remote channel dropped
        none = agent.infer(fashion_test.images[0])
    assert full.channels_sent == full.channels_total
    assert 0 < cut.channels_sent < cut.channels_total and cut.payload_bytes <= budget and not cut.degraded
    assert none.channels_sent == 0 and none.payload_bytes == 3 and not none.degraded
    # Zero-filled channels change the remote logits, and the local logits are untouched.
    np.testing.assert_array_equal(full.local_logits, none.local_logits)
    assert not np.allclose(full.remote_logits, none.remote_logits)


def test_mcu_emulation_reports_estimated_device_time(server, synthetic_bundle, fashion_test):
    with Agent(synthetic_bundle, server.address, mcu="stm32f746@216MHz") as fast, \
            Agent(synthetic_bundle, None, mcu="stm32f746@64MHz") as slow:
        assert fast.wait_connected(30), fast.client.state_detail
        a, b = fast.infer(fashion_test.images[0]), slow.infer(fashion_test.images[0])
    assert a.timings.device_compute_ms == a.timings.mcu_compute_ms > 0
    assert b.timings.mcu_compute_ms == pytest.approx(a.timings.mcu_compute_ms * 216 / 64)
    assert a.timings.host_compute_ms > 0
    # no firmware measurement: the MAC model covers the layers only, so the host's encode is charged
    t = a.timings
    assert not t.coding_in_device and t.encode_ms > 0
    assert t.latency_ms == pytest.approx(t.device_compute_ms + t.encode_ms + t.network_ms + t.merge_ms)


def test_a_measured_device_time_already_holds_the_coding(fashion_test):
    """The shipped bundle's device time is the firmware's measured agn_device_run, which codes the
    payload on the MCU: the host's encode of the same payload is reported but not added. The firmware
    sends the payload before its local predictor runs, so only the part up to the payload comes
    before the request; the local predictor overlaps it."""
    from agilenn.models import DEFAULT_REPOSITORY, ModelRepository

    bundle = ModelRepository([DEFAULT_REPOSITORY]).resolve("agilenn-fashion-mnist")
    with running_server(bundle.path) as srv, \
            Agent(bundle, srv.address, mcu="stm32f746@216MHz", deadline_ms=60_000) as agent:
        assert agent.wait_connected(30), agent.client.state_detail
        assert agent.device_instructions is not None
        r = agent.infer(fashion_test.images[0])
    t = r.timings
    assert not r.degraded and t.coding_in_device and t.encode_ms > 0
    assert 0 < agent.device_instructions_to_payload < agent.device_instructions
    assert t.mcu_compute_ms == pytest.approx(agent.device_instructions / 216e3)
    assert t.device_compute_ms == pytest.approx(agent.device_instructions_to_payload / 216e3)
    assert t.device_compute_ms + t.device_local_ms == pytest.approx(t.mcu_compute_ms)
    assert t.latency_ms == pytest.approx(t.device_compute_ms + max(t.network_ms, t.device_local_ms) + t.merge_ms)


def test_local_only_agent(synthetic_bundle, fashion_test):
    with Agent(synthetic_bundle, None) as agent:
        r = agent.infer(fashion_test.images[0])
    assert r.degraded and r.reason == "no_server" and r.payload_bytes == 0
    assert r.prediction == r.local_prediction


def test_refuses_a_server_with_another_model_version(tmp_path, synthetic_bundle, fashion_test):
    other = make_random_bundle(tmp_path / "v2", version="2", seed=3)
    with running_server(other) as srv, Agent(synthetic_bundle, srv.address, backoff_max_s=0.2) as agent:
        assert not agent.wait_connected(1.0)
        assert agent.client.state == "mismatch"
        r = agent.infer(fashion_test.images[0])
    assert r.degraded and r.reason == "model_mismatch" and "synthetic:1" in r.detail
    assert r.payload_bytes == 0  # nothing was sent to the wrong model


def test_bearer_token(tmp_path, synthetic_bundle, fashion_test):
    (tmp_path / "token").write_text("s3cret\n")
    with running_server(synthetic_bundle, auth_token_file=tmp_path / "token") as srv:
        with Agent(synthetic_bundle, srv.address, security=ClientSecurity(token="s3cret")) as agent:
            assert agent.wait_connected(30)
            assert not agent.infer(fashion_test.images[0]).degraded
        with Agent(synthetic_bundle, srv.address, security=ClientSecurity(token="wrong"), backoff_max_s=0.2) as agent:
            assert not agent.wait_connected(1.0)
            r = agent.infer(fashion_test.images[0])
            assert r.degraded and "UNAUTHENTICATED" in r.detail


def _run_until(agent, images, predicate, limit_s=30.0):
    """Infer images cyclically until predicate(result) holds; returns every result (each input answered)."""
    results, end, i = [], time.monotonic() + limit_s, 0
    while time.monotonic() < end:
        r = agent.infer(images[i % len(images)])
        results.append(r)
        i += 1
        if predicate(r):
            return results
        time.sleep(0.01)
    raise AssertionError(f"condition not reached in {limit_s} s; last: {results[-1].reason} {results[-1].detail}")


def test_fallback_and_recovery_when_the_server_dies_and_returns(synthetic_bundle, fashion_test, offline_reference):
    images = fashion_test.images[:50]
    bundle = load_bundle(synthetic_bundle)
    ref = offline_reference(bundle, images)
    answers = 0
    with running_server(synthetic_bundle) as srv, \
            Agent(bundle, srv.address, deadline_ms=5000, backoff_max_s=0.3) as agent:
        assert agent.wait_connected(30)
        before = [agent.infer(im) for im in images[:10]]
        answers += len(before)
        assert not any(r.degraded for r in before)

        srv.kill()  # abrupt: the stream breaks mid-run
        down = [agent.infer(im) for im in images[10:30]]
        answers += len(down)
        assert all(r.degraded for r in down[1:])  # the first may race the kill
        assert {r.reason for r in down if r.degraded} <= {"stream_broken", "server_unavailable"}
        # Degraded answers are exactly the local predictor's.
        assert [r.prediction for r in down] == [
            int(ref["local_pred"][10 + i]) if r.degraded else int(ref["pred"][10 + i]) for i, r in enumerate(down)]

        srv.start()  # same port
        recovered = _run_until(agent, images, lambda r: not r.degraded)
        answers += len(recovered)
        after = [agent.infer(im) for im in images[30:50]]
        answers += len(after)
        assert not any(r.degraded for r in after)
        assert [r.prediction for r in after] == ref["pred"][30:50].tolist()
        assert agent.client.connects >= 2
    assert answers == 10 + 20 + len(recovered) + 20


def test_deadline_when_the_server_stalls(synthetic_bundle, fashion_test):
    images = fashion_test.images[:5]
    with running_server(synthetic_bundle) as srv, Agent(synthetic_bundle, srv.address, deadline_ms=300) as agent:
        assert agent.wait_connected(30)
        srv.send_signal(signal.SIGSTOP)  # alive but not answering
        try:
            stalled = [agent.infer(im) for im in images[:3]]
            # three misses in a row: the agent drops the stream and answers locally at once
            after = agent.infer(images[3])
        finally:
            srv.send_signal(signal.SIGCONT)
        assert all(r.degraded and r.reason == "deadline" for r in stalled)
        assert all(r.payload_bytes > 0 and r.timings.network_ms >= 299 for r in stalled)
        assert after.degraded and after.reason in ("server_unavailable", "stream_broken")
        recovered = _run_until(agent, images, lambda r: not r.degraded)
    assert recovered[-1].remote_logits is not None
