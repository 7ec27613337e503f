"""Soak and flood benchmark of the inference server: hostile traffic, backpressure, memory.

    agilenn-bench soak [--model-dir DIR] [--requests 100000] [--streams 8] [--unary 4000]
                       [--flood-seconds 5] [--address HOST:PORT --server-pid PID] [--out F.json] [--markdown]

Two phases against one real server (started here with agilenn.server.testing.running_server, or
an already running one given by --address and --server-pid):

1. **soak**: ``--requests`` requests over ``--streams`` concurrent InferStream calls (each keeps
   ``--depth`` requests in flight) plus ``--unary`` Infer calls, about half of them hostile
   (agilenn.server.hostile_requests: garbage and truncated protobuf, corrupt/truncated/padded
   payloads, zstd with junk, huge or odd model names, bad images). Every reply is checked against
   the case's expected status and its request_id; counts by status, the p99 latency of the valid
   requests and the server's RSS (sampled every second: before, peak, after, and the trend over the
   second half) are reported.
2. **flood**: ``--streams`` streams write valid requests as fast as the server lets them for
   ``--flood-seconds``, every 10th with ``timeout_ms=5``. Reported: how many requests one stream
   could have written but not yet had answered (what the server side buffers), the delay from
   writing a ``timeout_ms=5`` request to its answer, and the drain time (last write to last reply).

The server's stream window and HTTP/2 flow control decide the flood numbers: run once against the
code before a change (--address) and once after, on the same machine, and compare.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

INFER = "/agilenn.v1.Inference/Infer"
INFER_STREAM = "/agilenn.v1.Inference/InferStream"


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process in MiB (Linux /proc), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentile(values, q) -> float | None:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if len(values) else None


def _load_bundle(model_dir: Path | None):
    from agilenn.models.model_repository import ModelRepository

    return ModelRepository([model_dir] if model_dir else None).resolve("", "")


def _case_pool(bundle, n: int, seed: int):
    from agilenn.server.hostile_requests import HostileRequests

    gen = HostileRequests(bundle, seed=seed)
    return [gen.next() for _ in range(n)]


def _status_of_reply(raw: bytes, case) -> tuple[str, bool]:
    """(status name, whether it is what the case expects and carries the case's request_id)."""
    from agilenn.v1 import inference_pb2 as pb

    reply = pb.InferResponse.FromString(raw)
    status = "OK" if reply.WhichOneof("result") == "logits" else pb.ErrorCode.Name(reply.error.code)
    return status, status in case.expect.split("|") and reply.request_id == case.request_id


# --- phase 1: soak ------------------------------------------------------------------------------
async def _soak(address: str, pool, requests: int, streams: int, depth: int, unary: int, server_pid: int | None):
    import grpc

    from agilenn.server.errors import GRPC_STATUS
    from agilenn.v1 import inference_pb2 as pb

    grpc_status = {pb.ErrorCode.Name(code): status for code, status in GRPC_STATUS.items()}
    counts: collections.Counter = collections.Counter()
    wrong: collections.Counter = collections.Counter()  # kind -> replies that were not what the case expects
    stream_ends: collections.Counter = collections.Counter()
    latencies: list[float] = []
    rss: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    stop_sampling = asyncio.Event()

    async def sample_rss():
        while server_pid is not None and not stop_sampling.is_set():
            value = rss_mib(server_pid)
            if value is not None:
                rss.append((time.perf_counter() - t0, value))
            try:
                await asyncio.wait_for(stop_sampling.wait(), 1.0)
            except (TimeoutError, asyncio.TimeoutError):
                pass

    channel = grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    stream_call = channel.stream_stream(INFER_STREAM)
    unary_call = channel.unary_unary(INFER)
    per_stream = requests // streams

    async def stream(s: int) -> None:
        call = stream_call(timeout=3600)
        in_flight = asyncio.Semaphore(depth)
        sent: collections.deque = collections.deque()
        sent_count = [0]

        async def writer():
            for i in range(per_stream):
                await in_flight.acquire()
                case = pool[(s * per_stream + i) % len(pool)]
                sent.append((case, time.perf_counter()))
                sent_count[0] += 1
                await call.write(case.wire)
            await call.done_writing()

        async def reader():
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                case, t = sent.popleft()
                in_flight.release()
                status, ok = _status_of_reply(raw, case)
                counts[f"stream {status}"] += 1
                if not ok:
                    wrong[case.kind] += 1
                elif status == "OK" and case.expect == "OK":
                    latencies.append(time.perf_counter() - t)

        writing = asyncio.get_running_loop().create_task(writer())
        try:
            await reader()
            stream_ends[(await call.code()).name] += 1
        except grpc.RpcError as exc:
            stream_ends[exc.code().name] += 1
        finally:  # a stream that ended early leaves its writer waiting for replies that never come
            writing.cancel()
            try:
                await writing
            except (asyncio.CancelledError, Exception):  # the call is over; how the write failed does not matter
                pass
        counts["stream unanswered"] += len(sent)
        counts["stream never sent (stream ended early)"] += per_stream - sent_count[0]

    async def unary_worker(w: int, workers: int) -> None:
        for i in range(w, unary, workers):
            case = pool[(i * 7919) % len(pool)]
            expected = {"OK" if e == "OK" else grpc_status[e].name for e in case.expect.split("|")}
            try:
                await unary_call(case.wire, timeout=60)
                status = "OK"
            except grpc.RpcError as exc:
                status = exc.code().name
                if len(exc.details() or "") > 2048:
                    wrong["unary message over 2 KiB"] += 1
            counts[f"unary {status}"] += 1
            if status not in expected:
                wrong[case.kind] += 1

    sampler = asyncio.get_running_loop().create_task(sample_rss())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await asyncio.gather(*(stream(s) for s in range(streams)), *(unary_worker(w, 16) for w in range(16)))
    elapsed = time.perf_counter() - start
    stop_sampling.set()
    await sampler
    if server_pid is not None:
        rss.append((time.perf_counter() - t0, rss_mib(server_pid)))
    await channel.close()
    return {
        "requests": per_stream * streams + unary, "stream_requests": per_stream * streams, "unary_requests": unary,
        "streams": streams, "depth": depth, "seconds": elapsed,
        "counts": dict(sorted(counts.items())), "stream_end_status": dict(stream_ends),
        "not_as_expected": dict(wrong), "valid_p50_ms": _percentile(latencies, 50),
        "valid_p99_ms": _percentile(latencies, 99), "valid_answered": len(latencies), "rss_samples": rss,
    }


def _rss_summary(samples: list[tuple[float, float]]) -> dict:
    if not samples:
        return {}
    t = np.asarray([s[0] for s in samples])
    v = np.asarray([s[1] for s in samples])
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half], v[half], 1)[0]) if half.sum() >= 3 else None
    return {"first_mib": float(v[0]), "peak_mib": float(v.max()), "last_mib": float(v[-1]),
            "second_half_slope_mib_per_min": None if slope is None else 60 * slope}


# --- phase 2: flood ------------------------------------------------------------------------------
async def _flood(address: str, payloads: list[bytes], streams: int, seconds: float):
    import grpc

    from agilenn.v1 import inference_pb2 as pb

    channel = grpc.aio.insecure_channel(address)
    stream_call = channel.stream_stream(INFER_STREAM)
    delays: list[float] = []  # write of a timeout_ms=5 request -> its answer
    max_outstanding: list[int] = []
    counts: collections.Counter = collections.Counter()
    last_reply = [0.0]
    written_total = [0]
    stop_at = time.perf_counter() + seconds

    async def stream(s: int) -> None:
        call = stream_call(timeout=600)
        sent: collections.deque = collections.deque()
        peak = 0

        async def writer():
            nonlocal peak
            i = 0
            while time.perf_counter() < stop_at:
                i += 1
                tight = i % 10 == 0
                wire = pb.InferRequest(request_id=i, feature_payload=payloads[(s + i) % len(payloads)],
                                       timeout_ms=5 if tight else 0).SerializeToString()
                await call.write(wire)
                sent.append((tight, time.perf_counter()))
                peak = max(peak, len(sent))
            written_total[0] += i
            await call.done_writing()

        async def reader():
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                now = time.perf_counter()
                tight, t = sent.popleft()
                reply = pb.InferResponse.FromString(raw)
                counts["OK" if reply.WhichOneof("result") == "logits" else pb.ErrorCode.Name(reply.error.code)] += 1
                if tight:
                    delays.append(now - t)
                last_reply[0] = max(last_reply[0], now)

        await asyncio.gather(writer(), reader())
        max_outstanding.append(peak)

    await asyncio.gather(*(stream(s) for s in range(streams)))
    await channel.close()
    answered = sum(counts.values())
    return {
        "streams": streams, "seconds": seconds, "written": written_total[0], "answered": answered,
        "counts": dict(counts), "max_written_unanswered_per_stream": max(max_outstanding),
        "timeout5_answer_delay_p50_ms": _percentile(delays, 50), "timeout5_answer_delay_p99_ms": _percentile(delays, 99),
        "timeout5_answer_delay_max_ms": _percentile(delays, 100),
        "drain_s": max(0.0, last_reply[0] - stop_at),
    }


def _valid_payloads(bundle, n: int = 64) -> list[bytes]:
    codec = bundle.codec()
    rng = np.random.default_rng(0)
    return [codec.encode(rng.uniform(0, 2, size=bundle.remote_feature_shape).astype(np.float32)) for _ in range(n)]


# --- driver ---------------------------------------------------------------------------------------
def run(address: str, server_pid: int | None, bundle, args) -> dict:
    report: dict = {}
    if not args.skip_soak:
        pool = _case_pool(bundle, args.pool, args.seed)
        rss_before = rss_mib(server_pid) if server_pid else None
        soak = asyncio.run(_soak(address, pool, args.requests, args.streams, args.depth, args.unary, server_pid))
        soak["rss"] = {"before_mib": rss_before, **_rss_summary(soak.pop("rss_samples"))}
        report["soak"] = soak
        print(f"soak: {soak['requests']} requests in {soak['seconds']:.1f} s; {soak['counts']}; stream ends "
              f"{soak['stream_end_status']}; not as expected {soak['not_as_expected'] or 'none'}; valid p99 "
              f"{soak['valid_p99_ms']:.1f} ms; RSS {soak['rss']}", flush=True)
    if args.flood_seconds > 0:
        flood = asyncio.run(_flood(address, _valid_payloads(bundle), args.streams, args.flood_seconds))
        report["flood"] = flood
        print(f"flood: {json.dumps(flood)}", flush=True)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="agilenn-bench soak", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, help="bundle or repository (default: the shipped repository)")
    p.add_argument("--requests", type=int, default=100_000, help="stream requests in the soak (default %(default)s)")
    p.add_argument("--streams", type=int, default=8, help="concurrent streams, soak and flood (default %(default)s)")
    p.add_argument("--depth", type=int, default=8, help="requests in flight per soak stream (default %(default)s)")
    p.add_argument("--unary", type=int, default=4000, help="unary calls in the soak (default %(default)s)")
    p.add_argument("--pool", type=int, default=4000, help="distinct cases, cycled (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flood-seconds", type=float, default=5.0, help="flood length; 0 skips it (default %(default)s)")
    p.add_argument("--skip-soak", action="store_true", help="only the flood")
    p.add_argument("--address", help="an already running server instead of starting one")
    p.add_argument("--server-pid", type=int, help="its process id, for RSS (with --address)")
    p.add_argument("--server-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="extra option for the server started here, e.g. stream_window=64")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)

    bundle = _load_bundle(args.model_dir)
    command = "agilenn-bench soak " + " ".join(sys.argv[2:] if argv is None else argv)
    header = {"command": command, "bundle": f"{bundle.name}:{bundle.version} ({bundle.path})", "cpus": os.cpu_count(),
              "load_average_at_start": os.getloadavg()[0]}
    if args.address:
        report = run(args.address, args.server_pid, bundle, args)
    else:
        from agilenn.server.testing import running_server

        extra = {}
        for item in args.server_arg:
            key, _, value = item.partition("=")
            extra[key.strip().lstrip("-").replace("-", "_")] = value
        header["server_options"] = extra
        with tempfile.TemporaryDirectory():
            with running_server(args.model_dir, metrics_port=None, **extra) as srv:
                report = run(srv.address, srv.process.pid, bundle, args)
                log = srv.log_text()
        report["server_log_lines"] = len(log.splitlines())
        report["server_log_tracebacks"] = log.count("Traceback")
        print(f"server log: {report['server_log_lines']} lines, {report['server_log_tracebacks']} tracebacks")
    report = {**header, **report}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
