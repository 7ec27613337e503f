"""The userspace link relay: its scheduling model (pure, no clocks), and real transfers through it.

No upper bounds on time anywhere (a loaded machine may be slow); a shaped transfer must take at
least its physical minimum, bytes / rate, and the relay must count exactly the bytes it carried.
"""

import random
import socket

import pytest

from agilenn.benchmarks.goodput import SinkProcess, _transfer, measure
from agilenn.benchmarks.relay import MIN_RTO_S, LinkModel, RelayProcess


def test_serialization_queues_segments_back_to_back():
    link = LinkModel(rate_bps=8000, delay_s=0.1, overhead=0)  # 1000 bytes/s
    assert link.schedule(0.0, 500) == pytest.approx(0.5 + 0.1)
    assert link.schedule(0.0, 500) == pytest.approx(1.0 + 0.1)  # waits for the first one's airtime
    assert link.schedule(5.0, 100) == pytest.approx(5.1 + 0.1)  # idle link: starts at once


def test_per_segment_overhead_is_charged_as_airtime():
    link = LinkModel(rate_bps=8000, overhead=66)
    assert link.schedule(0.0, 434) == pytest.approx(0.5)


def test_unshaped_rate_adds_only_delay():
    link = LinkModel(rate_bps=None, delay_s=0.02)
    assert link.schedule(1.0, 10**6) == pytest.approx(1.02)


def test_loss_costs_a_retransmission_timeout_and_airtime_again():
    link = LinkModel(rate_bps=8000, delay_s=0.01, loss=0.5, overhead=0, rng=random.Random(3))
    deliveries = [link.schedule(float(i * 10), 100) for i in range(200)]
    assert 0 < link.lost < 200
    late = [d - i * 10 for i, d in enumerate(deliveries)]
    on_time = 0.1 + 0.01
    assert min(late) == pytest.approx(on_time)
    assert all(x == pytest.approx(on_time) or x >= on_time + MIN_RTO_S for x in late)


def test_jitter_only_adds_delay():
    link = LinkModel(rate_bps=None, delay_s=0.005, jitter_s=0.003, rng=random.Random(1))
    assert all(link.schedule(0.0, 1) >= 0.005 for _ in range(100))


@pytest.fixture(scope="module")
def sink():
    with SinkProcess() as s:
        yield s


def test_relay_counts_exactly_the_bytes_it_carries(sink):
    with RelayProcess(f"127.0.0.1:{sink.port}") as relay, socket.create_connection(("127.0.0.1", relay.port)) as s:
        _transfer(s, 12345)
        _transfer(s, 1)
        stats = relay.stats()
    # each transfer: 8-byte length + the bytes up, an 8-byte acknowledgement down
    assert stats["bytes_up"] == 12345 + 8 + 1 + 8
    assert stats["bytes_down"] == 16
    assert stats["connections"] == 1


def test_shaped_transfer_takes_at_least_bytes_over_rate(sink):
    rate_kbps, nbytes = 400, 20_000
    with RelayProcess(f"127.0.0.1:{sink.port}", rate_kbps=rate_kbps, delay_ms=5) as relay:
        result = measure("127.0.0.1", relay.port, nbytes)
    assert result["elapsed_s"] >= nbytes * 8 / (rate_kbps * 1000)
    assert result["ping_s"] >= 2 * 0.005  # a round trip crosses the delay twice
    assert result["goodput_kbps"] <= rate_kbps  # framing is charged too: never above the rate


def test_stream_order_survives_jitter(sink):
    # an echo-free check: the sink only acknowledges when every byte of every transfer arrived in
    # sequence (it reads the length prefix, then exactly that many bytes)
    with RelayProcess(f"127.0.0.1:{sink.port}", delay_ms=1, jitter_ms=3, seed=7) as relay, \
            socket.create_connection(("127.0.0.1", relay.port), timeout=30) as s:
        for n in (1, 3000, 17, 5000):
            _transfer(s, n)
        assert relay.stats()["bytes_up"] == sum(n + 8 for n in (1, 3000, 17, 5000))


def test_relay_process_stops_on_exit(sink):
    with RelayProcess(f"127.0.0.1:{sink.port}") as relay:
        proc = relay.proc
    assert proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=2).close()
