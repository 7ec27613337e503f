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
        with SinkProcess(shaper.ns_ip, prefix=shaper.exec_prefix()) as sink:
            nbytes = 40_000
            result = measure(shaper.ns_ip, sink.port, nbytes)
        assert result["elapsed_s"] >= (nbytes - 1600) * 8 / 800_000  # less one tbf burst: a lower bound
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
        assert "1Mbit" in bed.tc.qdisc()
    assert ns not in _namespaces()
