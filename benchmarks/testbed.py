"""The measured path: the real server behind an emulated link, and a goodput check of that link.

    client (agent / baseline) -> 127.0.0.1:<relay> -> [relay: delay, jitter, loss, serialization]
        -> server                                    (userspace shaper: server on loopback)
        -> veth + tbf -> server in a namespace       (tc shapers)

Shapers (the run records which one it used):
- ``tc``: kernel tbf on a veth pair paces the rate in both directions (real TCP/IP framing and
  ACKs on a 1500-byte MTU), and the relay adds delay/jitter/loss plus each segment's own airtime,
  because a token bucket lets a message smaller than its burst through at line rate after an idle
  gap: a 700-byte message at 270 kbps took 16.7 ms through tbf alone, against 36.7 ms of physics
  (docs/latency.md). Needs root.
- ``tbf``: tbf for the rate and the relay for delay only (the textbook split; bulk-faithful, but
  optimistic for small messages as above). Needs root.
- ``userspace``: the relay does everything. No root needed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from agilenn.server.testing import RunningServer

from .goodput import SinkProcess, measure
from .links import LinkProfile
from .relay import MSS, SEGMENT_OVERHEAD, RelayProcess
from .shaper_tc import TcShaper, unavailable_reason

SHAPERS = ("tc", "tbf", "userspace")


def choose_shaper(requested: str = "auto") -> str:
    if requested == "auto":
        return "userspace" if unavailable_reason() else "tc"
    if requested not in SHAPERS:
        raise ValueError(f"unknown shaper {requested!r}; choose auto or one of {', '.join(SHAPERS)}")
    if requested != "userspace" and (reason := unavailable_reason()):
        raise RuntimeError(f"shaper {requested!r} unavailable: {reason}; use --shaper userspace")
    return requested


class NamespacedServer(RunningServer):
    """RunningServer, started inside a network namespace and listening on the namespace's address."""

    def __init__(self, prefix: list[str], host: str, model_dirs, **options):
        super().__init__(model_dirs, **options)
        self.prefix, self.host = list(prefix), host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [*self.prefix, *super().command(), "--host", self.host]  # the last --host wins


@dataclass
class LinkSession:
    link: LinkProfile
    relay: RelayProcess
    tc: TcShaper | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.relay.port}"

    def stats(self) -> dict:
        """The relay's counters (TCP payload bytes and segments per direction) and, under the tc
        shapers, the qdiscs' own (whole frames: TCP/IP headers and ACKs included)."""
        stats = self.relay.stats()
        if self.tc is not None:
            stats.update(self.tc.counters())
        return stats


class Testbed:
    """One server for the whole run; link() re-shapes the path for each profile."""

    def __init__(self, model_dirs, shaper: str = "auto", seed: int = 0):
        self.model_dirs = list(model_dirs)
        self.shaper = choose_shaper(shaper)
        self.seed = seed
        self._stack = contextlib.ExitStack()
        self.tc: TcShaper | None = None
        self.server: RunningServer | None = None
        self.sink: SinkProcess | None = None

    def __enter__(self) -> "Testbed":
        try:
            # One device sending one request at a time: batching would only add its queue delay.
            options = dict(no_batching=True, max_queue_delay_us=0, metrics_port=None, log_level="WARNING")
            if self.shaper == "userspace":
                self.server = self._stack.enter_context(RunningServer(self.model_dirs, **options))
                self.sink = self._stack.enter_context(SinkProcess())
            else:
                self.tc = self._stack.enter_context(TcShaper())
                prefix = self.tc.exec_prefix()
                self.server = self._stack.enter_context(
                    NamespacedServer(prefix, self.tc.ns_ip, self.model_dirs, **options))
                self.sink = self._stack.enter_context(SinkProcess(self.tc.ns_ip, prefix=prefix))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()  # server, sink, then the namespace: always, also on errors

    @property
    def sink_address(self) -> str:
        host = self.tc.ns_ip if self.tc else "127.0.0.1"
        return f"{host}:{self.sink.port}"

    @contextlib.contextmanager
    def link(self, link: LinkProfile, upstream: str | None = None):
        """Shape the path to `link`; yields a LinkSession whose address the client connects to."""
        if self.tc:
            self.tc.set_rate(link.rate_kbps)
        relay_rate = None if self.shaper == "tbf" else link.rate_kbps
        with RelayProcess(upstream or self.server.address, relay_rate, link.delay_ms, link.jitter_ms,
                          link.loss_pct, seed=self.seed) as relay:
            yield LinkSession(link, relay, self.tc)

    def goodput(self, link: LinkProfile, seconds: float = 2.0) -> dict:
        """Bulk-transfer about `seconds` worth of bytes through the shaped path to the sink."""
        nbytes = max(int(link.bytes_per_s * seconds), 4096)
        with self.link(link, upstream=self.sink_address) as session:
            host, _, port = session.address.rpartition(":")
            result = measure(host, int(port), nbytes)
        result["ratio"] = round(result["goodput_kbps"] / link.rate_kbps, 4)
        if self.tc:
            result["qdisc"] = self.tc.qdisc()
        return result

    def describe(self) -> dict:
        info = {"shaper": self.shaper, "server_address": self.server.address}
        if self.tc:
            info.update(self.tc.describe())
            info["shaper"] = self.shaper
        info["relay"] = {"mss": MSS, "segment_overhead_bytes": SEGMENT_OVERHEAD,
                         "shapes_rate": self.shaper != "tbf"}
        return info
