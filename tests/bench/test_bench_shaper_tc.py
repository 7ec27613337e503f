"""The kernel shaper: a namespace + veth pair with tbf, always removed. Needs root and iproute2."""

import subprocess

import pytest

from agilenn.benchmarks.goodput import SinkProcess, measure
from agilenn.benchmarks.shaper_tc import NS_PREFIX, TcShaper, unavailable_reason

reason = unavailable_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=f"tc shaper: {reason}")


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_tbf_shapes_both_ends_and_the_namespace_is_removed():
    with TcShaper() as shaper:
        assert shaper.ns in _namespaces()
        shaper.set_rate(800)
        assert "tbf" in shaper.qdisc() and "800Kbit" in shaper.qdisc()
        inside = subprocess.run(["tc", "-n", shaper.ns, "qdisc", "show", "dev", shaper.ns_if],
                                capture_output=True, text=True).stdout
        assert "800Kbit" in inside
        before = shaper.counters()
        with SinkProcess(shaper.ns_ip, prefix=shaper.exec_prefix()) as sink:
            nbytes = 40_000
            result = measure(shaper.ns_ip, sink.port, nbytes)
        assert result["elapsed_s"] >= (nbytes - 1600) * 8 / 800_000  # less one tbf burst: a lower bound
        after = shaper.counters()
        # the qdiscs' own counters: the bulk bytes went up as whole frames (headers included), ACKs came down
        sent_up = after["qdisc_bytes_up"] - before["qdisc_bytes_up"]
        packets_up = after["qdisc_packets_up"] - before["qdisc_packets_up"]
        assert nbytes + 54 * packets_up <= sent_up <= nbytes + 80 * packets_up + 4096
        assert packets_up >= nbytes // 1448
        assert after["qdisc_packets_down"] > before["qdisc_packets_down"]
        ns = shaper.ns
    assert ns not in _namespaces()
    assert shaper.host_if not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_namespace_is_removed_when_the_body_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with TcShaper() as shaper:
            raise RuntimeError("boom")
    assert shaper.ns not in _namespaces()
    assert not any(line.startswith(shaper.ns) for line in _namespaces().splitlines())
    assert NS_PREFIX in shaper.ns


def test_server_in_the_namespace_answers_the_agent_through_the_shaped_path(tmp_path):
    from agilenn.benchmarks.links import LinkProfile
    from agilenn.benchmarks.schemes import AgentClient
    from agilenn.benchmarks.testbed import Testbed
    from agilenn.models import load_bundle
    from agilenn.models.synthetic import make_random_bundle
    from agilenn.datasets import load_dataset

    bundle = load_bundle(make_random_bundle(tmp_path / "b"))
    image = load_dataset("fashion-mnist", "test").images[0]
    with Testbed([bundle.path], shaper="tc") as bed:
        ns = bed.tc.ns
        assert bed.server.address.startswith("10.77.")
        with bed.link(LinkProfile("t", 1000, 1)) as session:
            client = AgentClient(bundle, session.address, "ans", None)
            try:
                result = client.infer(image)
            finally:
                client.close()
            stats = session.stats()
        assert not result.degraded and result.payload_bytes > 0
        assert stats["bytes_up"] > result.payload_bytes  # the request and its framing crossed the relay
        # under tc the session also reads the qdiscs' counters: whole frames, more than the TCP payload
        assert stats["qdisc_bytes_up"] > stats["bytes_up"] and stats["qdisc_bytes_down"] > stats["bytes_down"]
        assert "1Mbit" in bed.tc.qdisc()
    assert ns not in _namespaces()
