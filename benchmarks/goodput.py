"""Achieved goodput of a shaped path: a bulk TCP transfer to a sink that acknowledges the last byte.

    client -> [8-byte length][N bytes] -> sink;  sink -> [8-byte count] once all N arrived

goodput = N / (t_bulk - t_ping), where t_ping is the same exchange with N=1, so the round trip and
the ack are not charged to the rate. The sink runs where the server runs (inside the namespace with
the tc shaper), so the transfer crosses exactly the path the inference traffic crosses.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import time

_LEN = struct.Struct("<Q")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def serve(host: str, port: int) -> None:
    """Answer transfers forever, one connection at a time (prints the port as a JSON line first)."""
    with socket.create_server((host, port)) as server:
        print(json.dumps({"listening": server.getsockname()[1]}), flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    while True:
                        n = _LEN.unpack(_recv_exact(conn, _LEN.size))[0]
                        remaining = n
                        while remaining:
                            chunk = conn.recv(min(remaining, 1 << 20))
                            if not chunk:
                                raise ConnectionError("closed mid-transfer")
                            remaining -= len(chunk)
                        conn.sendall(_LEN.pack(n))
                except ConnectionError:
                    continue


def _transfer(sock: socket.socket, n: int) -> float:
    block = b"\xa5" * min(n, 1 << 16)
    start = time.perf_counter()
    sock.sendall(_LEN.pack(n))
    left = n
    while left:
        sent = sock.send(block[: min(left, len(block))])
        left -= sent
    echoed = _LEN.unpack(_recv_exact(sock, _LEN.size))[0]
    elapsed = time.perf_counter() - start
    if echoed != n:
        raise RuntimeError(f"sink acknowledged {echoed} bytes of {n}")
    return elapsed


def measure(host: str, port: int, nbytes: int) -> dict:
    """Goodput in kbps of an nbytes bulk transfer through host:port (a shaped path to a sink)."""
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ping_s = min(_transfer(sock, 1) for _ in range(3))
        bulk_s = _transfer(sock, nbytes)
    rate_s = max(bulk_s - ping_s, 1e-9)
    return {"bytes": nbytes, "elapsed_s": round(bulk_s, 4), "ping_s": round(ping_s, 4),
            "goodput_kbps": round(nbytes * 8 / rate_s / 1000, 2)}


class SinkProcess:
    """The sink in a subprocess; `prefix` runs it elsewhere (e.g. ["ip", "netns", "exec", ns])."""

    def __init__(self, host: str = "127.0.0.1", prefix=()):
        self.args = [*prefix, sys.executable, "-m", "agilenn.benchmarks.goodput", "--serve", f"{host}:0"]
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "SinkProcess":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"goodput sink did not start ({' '.join(self.args)})")
        self.port = json.loads(line)["listening"]
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="goodput sink: acknowledges length-prefixed bulk transfers")
    parser.add_argument("--serve", required=True, help="host:port (port 0 picks a free one)")
    args = parser.parse_args(argv)
    host, _, port = args.serve.rpartition(":")
    try:
        serve(host or "127.0.0.1", int(port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
