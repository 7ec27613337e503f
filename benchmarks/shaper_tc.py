"""Kernel rate shaping: a network namespace joined to this one by a veth pair, tbf on both ends.

    host namespace                          namespace agilenn-bench-<pid>
    10.77.<n>.1/30  [veth, tbf egress] <==> [veth, tbf egress]  10.77.<n>.2/30  (the server runs here)

The veth pair keeps a 1500-byte MTU: tbf on a 64 KiB-MTU loopback stalls, because a token bucket
never holds enough tokens for one such packet at these rates. Only the two /30 addresses of the
pair are used; nothing leaves the machine. Delay, jitter and loss are not tbf's job (the kernel has
no netem): the userspace relay adds them in front of the veth.

A token bucket paces bulk traffic at the rate, but lets the first `burst` bytes after an idle period
through at line rate; docs/latency.md discusses what that means for small messages.

Needs root, `ip` and `tc`. The namespace and the veth pair are always removed on exit, and
namespaces left behind by runs that were killed are removed at the next start.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess

NS_PREFIX = "agilenn-bench-"
MTU = 1500
BURST_BYTES = 1600  # the least tbf accepts at a 1500-byte MTU (one full frame plus headroom)
QUEUE_LATENCY_MS = 500  # tbf's queue limit, as time at the rate: deep enough that TCP bulk is not dropped


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the tc shaper cannot run here, or None if it can (probed once, in a throwaway namespace:
    root alone is not enough in a container without CAP_NET_ADMIN or without the tbf module)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2)"
    probe = f"{NS_PREFIX}probe-{os.getpid()}"
    try:
        for step in (["ip", "netns", "add", probe],
                     ["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst",
                      str(BURST_BYTES), "limit", "10000"]):
            result = _run(*step, check=False)
            if result.returncode != 0:
                return f"'{' '.join(step[:3])}' failed: {result.stderr.strip() or result.returncode}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces (and with them their veth ends) of earlier runs whose process is gone."""
    removed = []
    listing = _run("ip", "netns", "list", check=False).stdout
    for name in re.findall(rf"^({re.escape(NS_PREFIX)}(\d+))", listing, flags=re.M):
        ns, pid = name[0], int(name[1])
        if not _pid_alive(pid):
            _run("ip", "netns", "del", ns, check=False)
            removed.append(ns)
    return removed


class TcShaper:
    """Context manager owning one namespace + veth pair; set_rate() re-shapes both directions."""

    name = "tc-tbf"

    def __init__(self):
        pid = os.getpid()
        self.ns = f"{NS_PREFIX}{pid}"
        tag = f"{pid % 100000:05d}"
        self.host_if, self.ns_if = f"agb{tag}h", f"agb{tag}n"  # interface names are at most 15 chars
        self.host_ip = self.ns_ip = ""
        self.rate_kbps: float | None = None

    def _free_subnet(self) -> int:
        used = set(re.findall(r"inet 10\.77\.(\d+)\.", _run("ip", "-o", "-4", "addr", "show", check=False).stdout))
        for n in [os.getpid() % 250, *range(250)]:
            if str(n) not in used:
                return n
        raise RuntimeError("no free 10.77.x.0/30 subnet for the shaper's veth pair")

    def __enter__(self) -> "TcShaper":
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"tc shaper unavailable: {reason}")
        remove_stale_namespaces()
        try:
            n = self._free_subnet()
            self.host_ip, self.ns_ip = f"10.77.{n}.1", f"10.77.{n}.2"
            _run("ip", "netns", "add", self.ns)
            _run("ip", "link", "add", self.host_if, "mtu", str(MTU), "type", "veth", "peer", "name", self.ns_if,
                 "mtu", str(MTU))
            _run("ip", "link", "set", self.ns_if, "netns", self.ns)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            _run("ip", "-n", self.ns, "link", "set", self.ns_if, "up")
            _run("ip", "-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.ns]

    def set_rate(self, rate_kbps: float) -> None:
        limit = max(int(rate_kbps * 1000 / 8 * QUEUE_LATENCY_MS / 1000), 4 * BURST_BYTES)
        spec = ["root", "tbf", "rate", f"{rate_kbps:g}kbit", "burst", str(BURST_BYTES), "limit", str(limit)]
        _run("tc", "qdisc", "replace", "dev", self.host_if, *spec)
        _run("tc", "-n", self.ns, "qdisc", "replace", "dev", self.ns_if, *spec)
        self.rate_kbps = rate_kbps

    def counters(self) -> dict:
        """The tbf qdiscs' own byte and packet counters: up = the host end's egress (towards the
        server), down = the namespace end's. Bytes are whole frames (Ethernet + IP + TCP headers,
        pure ACKs included), as the shaper charged them to the link."""
        out = {}
        for direction, cmd in (("up", ["tc", "-s", "-j", "qdisc", "show", "dev", self.host_if]),
                               ("down", ["tc", "-n", self.ns, "-s", "-j", "qdisc", "show", "dev", self.ns_if])):
            qdiscs = [q for q in json.loads(_run(*cmd).stdout or "[]") if q.get("root") or q.get("kind") == "tbf"]
            if not qdiscs:
                raise RuntimeError(f"no root qdisc to read counters from ({' '.join(cmd)})")
            out[f"qdisc_bytes_{direction}"] = int(qdiscs[0]["bytes"])
            out[f"qdisc_packets_{direction}"] = int(qdiscs[0]["packets"])
        return out

    def qdisc(self) -> str:
        """The host end's qdisc as tc shows it (the namespace end is configured identically)."""
        return _run("tc", "qdisc", "show", "dev", self.host_if, check=False).stdout.strip()

    def describe(self) -> dict:
        return {"namespace": self.ns, "host_ip": self.host_ip, "server_ip": self.ns_ip, "mtu": MTU,
                "tbf_burst_bytes": BURST_BYTES, "tbf_queue_ms": QUEUE_LATENCY_MS}

    def close(self) -> None:
        # Deleting one end deletes the pair; deleting the namespace also takes its end with it.
        _run("ip", "link", "del", self.host_if, check=False)
        _run("ip", "netns", "del", self.ns, check=False)

    def __exit__(self, *exc) -> None:
        self.close()
