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
not share a GIL with the client being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
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
    def __init__(self, upstream: tuple[str, int], rate_kbps: float | None = None, delay_ms: float = 0.0,
                 jitter_ms: float = 0.0, loss_pct: float = 0.0, seed: int = 0, mss: int = MSS,
                 overhead: int = SEGMENT_OVERHEAD):
        self.upstream = upstream
        self.mss = mss
        rng = random.Random(seed)
        rate = rate_kbps * 1000 if rate_kbps else None
        self.up = LinkModel(rate, delay_ms / 1000, jitter_ms / 1000, loss_pct / 100, overhead, rng)
        self.down = LinkModel(rate, delay_ms / 1000, jitter_ms / 1000, loss_pct / 100, overhead, rng)
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    def stats(self) -> dict:
        return {"bytes_up": self.up.bytes, "bytes_down": self.down.bytes, "segments_up": self.up.segments,
                "segments_down": self.down.segments, "lost_up": self.up.lost, "lost_down": self.down.lost,
                "connections": self.connections}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._accept, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        writers = [client_w]
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
            writers.append(up_w)
            for w in writers:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(self._pipe(client_r, up_w, self.up), self._pipe(up_r, client_w, self.down),
                                 return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # upstream refused, or the relay is shutting down
        finally:
            for w in writers:
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: LinkModel) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        room = asyncio.Event()
        room.set()
        queued = 0
        last = 0.0  # this connection's last delivery time: TCP never reorders

        async def deliver():
            nonlocal queued
            try:
                while (item := await queue.get()) is not None:
                    at, segment = item
                    wait = at - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(segment)
                    link.bytes += len(segment)
                    link.segments += 1
                    queued -= len(segment)
                    if queued < PIPE_BUFFER:
                        room.set()
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionError, OSError):
                pass
            finally:
                room.set()

        sender = asyncio.create_task(deliver())
        try:
            while not sender.done():
                await room.wait()
                data = await reader.read(PIPE_BUFFER)
                if not data:
                    break
                now = loop.time()
                for i in range(0, len(data), self.mss):
                    segment = data[i:i + self.mss]
                    last = max(link.schedule(now, len(segment)), last)
                    queue.put_nowait((last, segment))
                    queued += len(segment)
                if queued >= PIPE_BUFFER:
                    room.clear()
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            await sender


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve(args) -> None:
    relay = Relay(_address(args.upstream), args.rate_kbps, args.delay_ms, args.jitter_ms, args.loss_pct, args.seed)
    host, port = _address(args.listen)
    port = await relay.start(host, port)
    print(json.dumps({"listening": port}), flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    # Control channel: one line on stdin ("stats") -> one JSON line on stdout; EOF stops the relay.
    def control():
        for line in sys.stdin:
            if line.strip() == "stats":
                snapshot = asyncio.run_coroutine_threadsafe(_snapshot(relay), loop).result()
                print(json.dumps(snapshot), flush=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=control, daemon=True).start()
    await done.wait()
    await relay.close()


async def _snapshot(relay: Relay) -> dict:
    return relay.stats()


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
    try:
        import uvloop  # lower per-segment overhead than the default loop

        uvloop.run(_serve(args))
    except ImportError:
        asyncio.run(_serve(args))


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
