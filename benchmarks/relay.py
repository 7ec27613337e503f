"""A userspace TCP relay that emulates a link: serialization at a rate, one-way delay, jitter, loss.

    client --TCP--> [relay: uplink pipe]   --TCP--> upstream (the server)
    client <--TCP-- [relay: downlink pipe] <--TCP-- upstream

Each direction is one shared link (all connections through the relay compete for it). A segment
(at most `mss` bytes, as TCP would cut it) that arrives at time t is delivered at

    start = max(t, link_free_at); link_free_at = start + len/rate     # serialization, FIFO
    deliver = link_free_at + delay + jitter                           # propagation

and never before the previous segment of the same connection (a TCP stream is never reordered, so
jitter only ever stretches gaps). rate=None leaves the rate to someone else (tc tbf in the root
shaper), so the relay adds only delay/jitter/loss.

Loss: a TCP stream cannot drop bytes, so a lost segment is modelled as what TCP does about it: it is
sent again after a retransmission timeout (Linux's minimum RTO, 200 ms, plus one RTT; doubled per
consecutive loss) and costs its airtime twice. Small request/response messages rarely get the three
duplicate ACKs fast retransmit needs, so the timeout is the realistic penalty.

The relay counts the bytes it delivers per direction (TCP payload: gRPC and HTTP/2 framing included,
TCP/IP headers not), which is how the benchmark measures wire bytes per inference.

Run it as its own process (`python -m agilenn.benchmarks.relay`, see RelayProcess) so its timers do
not share a GIL with the client being measured. Times are time.monotonic().
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

MSS = 1448  # Ethernet MTU 1500 minus IPv4/TCP headers with timestamps
# Airtime is charged per segment on payload plus the framing a kernel shaper (tbf) also counts:
# Ethernet 14 + IPv4 20 + TCP 20 + timestamp option 12. So "rate" means the same in both shapers,
# and bulk goodput comes out at 1448/1514 of it, as on a real link carrying TCP/IP.
SEGMENT_OVERHEAD = 66
MIN_RTO_S = 0.2  # Linux TCP_RTO_MIN
PIPE_BUFFER = 64 * 1024  # bytes a pipe holds before it stops reading (the sender then sees TCP backpressure)


@dataclass
class LinkModel:
    """One direction of the emulated link."""

    rate_bps: float | None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0  # probability per segment
    overhead: int = SEGMENT_OVERHEAD  # bytes of framing charged per segment
    rng: random.Random = field(default_factory=random.Random)
    free_at: float = 0.0
    bytes: int = 0  # delivered
    segments: int = 0
    lost: int = 0

    def schedule(self, now: float, nbytes: int) -> float:
        """Delivery time of a segment of nbytes that reached the link at `now`."""
        airtime = (nbytes + self.overhead) * 8 / self.rate_bps if self.rate_bps else 0.0
        start = max(now, self.free_at)
        self.free_at = start + airtime
        deliver = self.free_at + self.delay_s
        rto = MIN_RTO_S + 2 * self.delay_s
        while self.loss and self.rng.random() < self.loss:
            self.lost += 1
            self.free_at += airtime  # the retransmission occupies the link again
            deliver += rto
            rto *= 2
        if self.jitter_s:
            deliver += abs(self.rng.gauss(0.0, self.jitter_s))
        return deliver


class Relay:
    """Accepts connections and pipes each through the two link models (one thread per direction
    reading, one delivering: time.sleep wakes within ~0.1 ms, where an event loop's timers round
    to whole milliseconds, which on a 4 ms round trip would be most of the overhead measured)."""

    def __init__(self, upstream: tuple[str, int], rate_kbps: float | None = None, delay_ms: float = 0.0,
                 jitter_ms: float = 0.0, loss_pct: float = 0.0, seed: int = 0, mss: int = MSS,
                 overhead: int = SEGMENT_OVERHEAD):
        self.upstream = upstream
        self.mss = mss
        rng = random.Random(seed)
        rate = rate_kbps * 1000 if rate_kbps else None
        self.up = LinkModel(rate, delay_ms / 1000, jitter_ms / 1000, loss_pct / 100, overhead, rng)
        self.down = LinkModel(rate, delay_ms / 1000, jitter_ms / 1000, loss_pct / 100, overhead, rng)
        self.lock = threading.Lock()  # the link models are shared by every connection's threads
        self.connections = 0
        self.listener: socket.socket | None = None

    def stats(self) -> dict:
        with self.lock:
            return {"bytes_up": self.up.bytes, "bytes_down": self.down.bytes, "segments_up": self.up.segments,
                    "segments_down": self.down.segments, "lost_up": self.up.lost, "lost_down": self.down.lost,
                    "connections": self.connections}

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.listener = socket.create_server((host, port))
        threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True).start()
        return self.listener.getsockname()[1]

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connect, args=(client,), name="relay-conn", daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipes = [_Pipe(self, client, upstream, self.up), _Pipe(self, upstream, client, self.down)]
        for pipe in pipes:
            pipe.start()
        for pipe in pipes:
            pipe.join()
        client.close()
        upstream.close()


class _Pipe:
    """One direction of one connection: read, schedule on the link, deliver on time, in order."""

    def __init__(self, relay: Relay, src: socket.socket, dst: socket.socket, link: LinkModel):
        self.relay, self.src, self.dst, self.link = relay, src, dst, link
        self.queue: collections.deque = collections.deque()  # (deliver_at, segment); None ends it
        self.cond = threading.Condition()
        self.queued = 0
        self.threads = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._deliver, daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def _read(self) -> None:
        last = 0.0  # TCP never reorders: no segment is delivered before its predecessor
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: self.queued < PIPE_BUFFER)
                data = self.src.recv(PIPE_BUFFER)
                if not data:
                    break
                now = time.monotonic()
                items = []
                with self.relay.lock:
                    for i in range(0, len(data), self.relay.mss):
                        segment = data[i:i + self.relay.mss]
                        last = max(self.link.schedule(now, len(segment)), last)
                        items.append((last, segment))
                with self.cond:
                    self.queue.extend(items)
                    self.queued += len(data)
                    self.cond.notify_all()
        except OSError:
            pass
        finally:
            with self.cond:
                self.queue.append(None)
                self.cond.notify_all()

    def _deliver(self) -> None:
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: self.queue)
                    item = self.queue.popleft()
                if item is None:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                at, segment = item
                wait = at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with self.relay.lock:  # counted before the send, so a reply never beats its count
                    self.link.bytes += len(segment)
                    self.link.segments += 1
                self.dst.sendall(segment)
                with self.cond:
                    self.queued -= len(segment)
                    self.cond.notify_all()
        except OSError:
            # the far end is gone: stop reading this direction too
            try:
                self.src.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        finally:
            with self.cond:
                self.queued = 0
                self.cond.notify_all()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="userspace TCP link emulator (rate, delay, jitter, loss)")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--rate-kbps", type=float, default=None, help="omit to leave the rate unshaped")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss-pct", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    relay = Relay(_address(args.upstream), args.rate_kbps, args.delay_ms, args.jitter_ms, args.loss_pct, args.seed)
    port = relay.start(*_address(args.listen))
    print(json.dumps({"listening": port}), flush=True)
    # Control channel: one line on stdin ("stats") -> one JSON line on stdout; EOF stops the relay.
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(relay.stats()), flush=True)
    relay.close()


class RelayProcess:
    """Run the relay in a subprocess; `port` to connect to, `stats()` for its byte counters."""

    def __init__(self, upstream: str, rate_kbps: float | None = None, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                 loss_pct: float = 0.0, seed: int = 0, listen: str = "127.0.0.1:0"):
        self.args = [sys.executable, "-m", "agilenn.benchmarks.relay", "--listen", listen, "--upstream", upstream,
                     "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms), "--loss-pct", str(loss_pct),
                     "--seed", str(seed)]
        if rate_kbps:
            self.args += ["--rate-kbps", str(rate_kbps)]
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "RelayProcess":
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"relay exited with status {self.proc.returncode} before listening")
        self.port = json.loads(line)["listening"]
        return self

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc.stdout.close()


if __name__ == "__main__":
    main()
