"""Inference-server load benchmark: N simulated devices, each one gRPC stream, closed loop.

    python -m agilenn.benchmarks.server_load [--model-dir DIR] [--streams 1,16,64,256]
                                              [--workers 1,2] [--streams-per-connection 16]
                                              [--duration 5] [--out results.json] [--markdown]

For each server configuration (dynamic batching on, then off) it starts the real server
(agilenn.server.testing.running_server: a separate process) and, for each stream count, a client
process that runs that many streams for --duration seconds: each stream sends one feature payload,
waits for the reply and sends the next. Reported per point: throughput (replies/s), client-side
latency p50/p99, and the mean batch size the server reports. With --workers 1,2 each configuration
runs once per worker count (agilenn-server --workers N), in the same run, so the ratio compares like
with like; the kernel spreads connections over the workers, so use several connections
(--streams-per-connection 4) when comparing worker counts.

Without --model-dir it serves the shipped default bundle when models/repository/ has one, else a
proxy: a synthetic bundle whose remote.onnx is the default architecture's remote NN
(agilenn.training.nets.Body, untrained, exported with torch), so a run costs what the trained
model's will.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# --- client (runs in its own process) --------------------------------------------------------
def _payloads(model_dir: Path, n: int = 64) -> tuple[list[bytes], str, str]:
    """Realistic payloads: the bundle's device model on random images, then its codec."""
    from agilenn.device_agent.device_model import single_thread_session
    from agilenn.models.model_repository import ModelRepository

    repo = ModelRepository([model_dir] if model_dir else None)
    bundle = repo.resolve("", "")
    session = single_thread_session(bundle.onnx_path("device"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *bundle.input_shape[1:], bundle.input_shape[0]), dtype=np.uint8)
    feats = session.run(["remote_features"], {"image": bundle.preprocess(images)})[0]
    codec = bundle.codec()
    return [codec.encode(f) for f in feats], bundle.name, bundle.version


async def _client(address: str, streams: int, duration: float, warmup: float, payloads: list[bytes],
                  streams_per_connection: int = 16) -> dict:
    import grpc

    from agilenn.v1 import inference_pb2 as pb
    from agilenn.v1 import inference_pb2_grpc as pb_grpc

    # One HTTP/2 connection per 16 devices (by default): real devices each have their own, but
    # hundreds of connections in one client process would measure the client, not the server.
    n_channels = max(1, (streams + streams_per_connection - 1) // streams_per_connection)
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(n_channels)]
    stubs = [pb_grpc.InferenceStub(c) for c in channels]
    start = time.perf_counter()
    t_measure, t_end = start + warmup, start + warmup + duration
    latencies: list[float] = []
    batch_sizes: list[int] = []
    errors = 0
    replies = 0  # all of them, warm-up included: the driver divides the server's CPU time by it

    async def device(i: int) -> None:
        nonlocal errors, replies
        call = stubs[i % n_channels].InferStream()  # read/write API: no per-request generator overhead
        rid = 0
        while True:
            sent = time.perf_counter()
            if sent >= t_end:
                break
            rid += 1
            await call.write(pb.InferRequest(request_id=rid, feature_payload=payloads[(i + rid) % len(payloads)]))
            reply = await call.read()
            done = time.perf_counter()
            replies += 1
            if reply.WhichOneof("result") != "logits":
                errors += 1
            elif sent >= t_measure:
                latencies.append(done - sent)
                batch_sizes.append(reply.timings.batch_size)
        await call.done_writing()
        await call.wait_for_connection()
        while await call.read() is not grpc.aio.EOF:  # drain to the final status
            pass

    cpu0 = time.process_time()
    await asyncio.gather(*(device(i) for i in range(streams)))
    client_cpu_s = time.process_time() - cpu0  # the load generator's own share of the machine
    for c in channels:
        await c.close()
    lat = np.asarray(latencies) * 1e3
    return {
        "streams": streams,
        "requests": int(lat.size),
        "errors": errors,
        "replies_total": replies,
        "throughput": lat.size / duration,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "mean_batch": float(np.mean(batch_sizes)) if batch_sizes else None,
        "client_cpu_us_per_inference": 1e6 * client_cpu_s / replies if replies else None,
    }


def client_main(args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    payloads, _, _ = _payloads(args.model_dir)
    result = asyncio.run(_client(args.address, args.streams, args.duration, args.warmup, payloads,
                                 args.streams_per_connection))
    print(json.dumps(result))


# --- driver -----------------------------------------------------------------------------------
CONFIGS = {
    "batching": {},  # the server's defaults (max batch 32, max queue delay 0)
    "no-batching": {"no_batching": True},
}


def _proxy_bundle(tmp: Path) -> tuple[Path, str]:
    """The default architecture's remote NN, untrained (torch exports it), in a synthetic bundle.

    Weights do not change the cost of a run, so this measures what the trained default bundle
    will cost until one is shipped. Falls back to the synthetic linear remote NN without torch.
    """
    from agilenn.models.synthetic import make_random_bundle

    try:
        import torch

        from agilenn.training.nets import ArchConfig, Body
    except ImportError:
        path = make_random_bundle(tmp / "synthetic", name="synthetic", channels=24, k=5, feature_hw=(7, 7), seed=0)
        return path, "synthetic bundle (24 ch, k=5, 7x7, 4 levels) with a linear remote NN (torch unavailable)"
    cfg = ArchConfig()
    fh, fw = cfg.feature_hw
    path = make_random_bundle(tmp / "proxy", name="proxy-default-arch", channels=cfg.channels, k=cfg.k,
                              feature_hw=(fh, fw), input_shape=(cfg.in_channels, *cfg.input_hw),
                              levels=cfg.centroids, seed=0)
    body = Body(cfg.channels - cfg.k, cfg).eval()
    import warnings

    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(body, (torch.zeros(2, cfg.channels - cfg.k, fh, fw),), str(path / "remote.onnx"),
                          input_names=["remote_features"], output_names=["remote_logits"], opset_version=17,
                          dynamic_axes={"remote_features": {0: "N"}, "remote_logits": {0: "N"}}, dynamo=False)
    return path, (f"proxy: synthetic bundle with the default architecture's remote NN (training.nets.Body, "
                  f"untrained; {cfg.channels} ch, k={cfg.k}, {fh}x{fw}, {cfg.centroids} levels)")


def _default_model_dir(tmp: Path) -> tuple[Path | None, str]:
    from agilenn.models.model_repository import DEFAULT_REPOSITORY

    if any(DEFAULT_REPOSITORY.glob("*/*/manifest.json")):
        return None, f"shipped default repository ({DEFAULT_REPOSITORY})"
    return _proxy_bundle(tmp)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds_all(pids: list[int]) -> float | None:
    times = [_cpu_seconds(pid) for pid in pids]
    return None if any(t is None for t in times) else sum(times)


def run_point(address: str, model_dir: Path | None, streams: int, duration: float, warmup: float,
              streams_per_connection: int = 16) -> dict:
    cmd = [sys.executable, "-m", "agilenn.benchmarks.server_load", "client", "--address", address,
           "--streams", str(streams), "--duration", str(duration), "--warmup", str(warmup),
           "--streams-per-connection", str(streams_per_connection)]
    if model_dir:
        cmd += ["--model-dir", str(model_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    if out.returncode != 0:
        raise RuntimeError(f"client failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m agilenn.benchmarks.server_load", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("client", help="(internal) one client process")
    c.add_argument("--address", required=True)
    c.add_argument("--streams", type=int, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--warmup", type=float, default=1.0)
    c.add_argument("--model-dir", type=Path)
    c.add_argument("--streams-per-connection", type=int, default=16)
    p.add_argument("--model-dir", type=Path, help="bundle or repository to serve (default: see module docstring)")
    p.add_argument("--streams", default="1,16,64,256", help="comma-separated stream counts (default %(default)s)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per point (default %(default)s)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default %(default)s)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="which of: " + ", ".join(CONFIGS))
    p.add_argument("--workers", default="1", help="comma-separated server worker counts (default %(default)s)")
    p.add_argument("--streams-per-connection", type=int, default=16,
                   help="device streams sharing one HTTP/2 connection (default %(default)s)")
    p.add_argument("--server-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="extra server option for every config, e.g. max_queue_delay_us=1000")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = p.parse_args(argv)
    if args.command == "client":
        client_main(args)
        return 0

    from agilenn.server.testing import running_server

    extra = {}
    for item in args.server_arg:
        key, _, value = item.partition("=")
        extra[key.strip().lstrip("-").replace("-", "_")] = value
    streams = [int(s) for s in args.streams.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, bundle_desc = (args.model_dir, str(args.model_dir)) if args.model_dir else _default_model_dir(Path(tmp))
        load = os.getloadavg()[0]
        print(f"bundle: {bundle_desc}; {os.cpu_count()} CPUs; load average {load:.1f}", flush=True)
        for name in args.configs.split(","):
            for workers in [int(w) for w in args.workers.split(",")]:
                options = {**CONFIGS[name], **extra, **({"workers": workers} if workers > 1 else {})}
                with running_server(model_dir, metrics_port=None, **options) as srv:
                    for n in streams:
                        cpu0 = _cpu_seconds_all(srv.pids)
                        r = {"config": name, "workers": workers,
                             **run_point(srv.address, model_dir, n, args.duration, args.warmup,
                                         args.streams_per_connection)}
                        cpu1 = _cpu_seconds_all(srv.pids)
                        # The server's own CPU per inference: unlike throughput, barely moved by what
                        # else runs on the machine (the client, other jobs).
                        r["server_cpu_us_per_inference"] = (1e6 * (cpu1 - cpu0) / r["replies_total"]
                                                            if cpu0 is not None and cpu1 is not None
                                                            and r["replies_total"] else None)
                        results.append(r)
                        print(f"{name:12s} workers={workers} streams={n:4d}  {r['throughput']:8.0f} inf/s  "
                              f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  mean batch "
                              f"{r['mean_batch']:5.1f}  errors {r['errors']}  server CPU "
                              f"{r['server_cpu_us_per_inference'] or float('nan'):4.0f} us/inf, client CPU "
                              f"{r['client_cpu_us_per_inference'] or float('nan'):4.0f} us/inf", flush=True)
    report = {"bundle": bundle_desc, "cpus": os.cpu_count(), "load_average_at_start": load, "duration_s": args.duration, "server_options": extra,
              "streams_per_connection": args.streams_per_connection,
              "command": "python -m agilenn.benchmarks.server_load " + " ".join(argv if argv is not None else sys.argv[1:]),
              "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        print("\n| config | workers | streams | inferences/s | p50 ms | p99 ms | mean batch | server CPU us/inference "
              "| client CPU us/inference | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['config']} | {r['workers']} | {r['streams']} | {r['throughput']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                  f"| {r['mean_batch']:.1f} | {r['server_cpu_us_per_inference'] or float('nan'):.0f} "
                  f"| {r['client_cpu_us_per_inference'] or float('nan'):.0f} | {r['errors']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
