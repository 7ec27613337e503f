"""Several replicas behind gRPC client-side balancing: an agent given three real servers keeps
answering every image when the one serving it is killed mid-run; the only degraded answer is the
request in flight on the killed replica, none while reconnecting, none after.

Prints the number of degraded answers and how long the gap lasted (pytest -s; docs/server.md
quotes them).
"""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from agilenn.device_agent.agent import Agent
from agilenn.device_agent.client import channel_target
from agilenn.device_agent.sources import dataset_samples
from agilenn.models.model_repository import ModelRepository
from agilenn.server.testing import running_server

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 600
KILL_AT = 200
PACE_S = 0.005  # one image every 5 ms: a device's pace, not a tight loop (the gap is then measurable)


def _answered_ok(srv) -> float:
    with urllib.request.urlopen(srv.metrics_url, timeout=30) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("agilenn_requests_total{") and 'code="OK"' in line)


def test_server_lists_become_grpc_targets():
    assert channel_target("127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert channel_target("10.0.0.1:1, 10.0.0.2:2") == ("ipv4:10.0.0.1:1,10.0.0.2:2", True)
    assert channel_target("[::1]:5,[fe80::1]:6") == ("ipv6:[::1]:5,[fe80::1]:6", True)
    assert channel_target("dns:///agilenn.default.svc.cluster.local:50051") == (
        "dns:///agilenn.default.svc.cluster.local:50051", True)
    with pytest.raises(ValueError, match="IP addresses"):
        channel_target("a.example:1,b.example:1")
    with pytest.raises(ValueError, match="no valid port"):
        channel_target("10.0.0.1:1,10.0.0.2")
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        channel_target("10.0.0.1:1,[::1]:2")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")
@pytest.mark.timeout(600)
def test_killing_the_serving_replica_mid_run_costs_only_the_gap():
    bundle = ModelRepository(None).resolve("", "")
    samples = list(dataset_samples("fashion-mnist", "test", N_IMAGES))
    with ExitStack() as stack:
        servers = [stack.enter_context(running_server(None, metrics_port=0)) for _ in range(3)]
        address = ",".join(s.address for s in servers)
        agent = stack.enter_context(Agent(bundle, address, deadline_ms=1000))
        assert agent.wait_connected(30)
        results, killed, t_kill = [], None, None
        for i, sample in enumerate(samples):
            if i == KILL_AT:
                counts = [_answered_ok(s) for s in servers]
                killed = max(range(3), key=counts.__getitem__)  # the one the agent's stream is on
                assert counts[killed] == KILL_AT and sum(counts) == KILL_AT, counts
                t_kill = time.monotonic()
                servers[killed].kill()  # SIGKILL: a crash, no drain
            results.append((time.monotonic(), agent.infer(sample.image)))
            time.sleep(PACE_S)
        survivors = [s for j, s in enumerate(servers) if j != killed]
        after = sum(_answered_ok(s) for s in survivors)

    assert len(results) == N_IMAGES
    assert all(0 <= r.prediction < len(bundle.classes) for _, r in results)  # every image answered
    degraded = [i for i, (_, r) in enumerate(results) if r.degraded]
    reasons = {results[i][1].reason for i in degraded}
    # What was in flight on the killed replica (one request at most: this agent sends one at a time)
    # is answered locally; inputs arriving while the agent reconnects wait up to the failover wait
    # (~250 ms) for a survivor. On an idle machine that is enough (0 or 1 degraded, measured); on a
    # loaded one reconnecting can take longer, so the invariant checked is the issue's: degraded
    # answers form one run starting at the kill, and none come after the first answer from a survivor.
    detail = [(i, results[i][1].reason, results[i][1].detail) for i in degraded]
    assert degraded == list(range(KILL_AT, KILL_AT + len(degraded))), detail
    assert reasons <= {"stream_broken", "server_unavailable"}, detail
    if degraded:
        assert results[degraded[-1]][0] - t_kill < 5.0, detail  # the window closes within seconds
    remote_after_kill = N_IMAGES - KILL_AT - len(degraded)
    assert after == remote_after_kill  # the survivors answered the rest
    # How long the first input after the kill took to get its full (remote) answer.
    first_remote = next(i for i in range(KILL_AT, N_IMAGES) if not results[i][1].degraded)
    gap_ms = (results[first_remote][0] - t_kill) * 1e3 + results[first_remote][1].timings.latency_ms
    print("\nfailover: " + json.dumps({"images": N_IMAGES, "killed_at": KILL_AT, "degraded": len(degraded),
                                       "reasons": sorted(reasons), "gap_ms": round(gap_ms, 1),
                                       "pace_ms": PACE_S * 1e3}))


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_a_replica_whose_health_says_not_serving_gets_no_new_streams():
    """Client-side health checking: a draining replica (SIGTERM with --shutdown-delay: NOT_SERVING but
    still accepting) is skipped by every new agent, where round_robin alone would pick it half the time."""
    bundle = ModelRepository(None).resolve("", "")
    images = [s.image for s in dataset_samples("fashion-mnist", "test", 5)]
    with running_server(None, metrics_port=0) as healthy, \
            running_server(None, metrics_port=0, shutdown_delay=60, grace=1) as draining:
        draining.send_signal()  # SIGTERM: NOT_SERVING now, still serving for --shutdown-delay
        end = time.monotonic() + 30
        while draining.health("agilenn.v1.Inference") != "NOT_SERVING":
            assert time.monotonic() < end
            time.sleep(0.05)
        for _ in range(8):  # eight devices starting up
            with Agent(bundle, f"{draining.address},{healthy.address}", deadline_ms=5000) as agent:
                assert agent.wait_connected(30)
                assert not any(agent.infer(image).degraded for image in images)
        assert _answered_ok(draining) == 0 and _answered_ok(healthy) == 8 * len(images)
