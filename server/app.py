"""Assembling the grpc.aio server: inference servicer, health, reflection, auth, TLS, metrics,
and the graceful shutdown sequence."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agilenn.models.model_repository import ModelRepository
from agilenn.v1 import inference_pb2 as pb

from .auth import BearerTokenInterceptor, read_token
from .metrics import Metrics
from .reflection import enable_reflection
from .models import BatchingOptions, ServedModels
from .servicer import InferenceServicer
from .wire import inference_handlers

log = logging.getLogger("agilenn.server")

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["Inference"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Protobuf framing around the payload; the transport limit sits this far above the input limit so a
# modestly oversized input in a stream is answered in-band instead of breaking the stream.
_ENVELOPE_BYTES = 64 * 1024
# HTTP/2 flow control per stream, sized to the in-flight window (--stream-window): once a stream
# has that many requests in flight the server stops reading it, and the transport may buffer only
# this many bytes more before the client's writes block. A typical request (ANS payload, protobuf
# and gRPC framing) is well under 256 bytes. gRPC still lets a single larger message through: the
# transport widens a stream's window for the message being read.
_REQUEST_BYTES_ESTIMATE = 256
_MIN_STREAM_WINDOW_BYTES = 8 * 1024


def http2_stream_window_bytes(stream_window: int) -> int:
    return max(_MIN_STREAM_WINDOW_BYTES, stream_window * _REQUEST_BYTES_ESTIMATE)


@dataclass
class ServerOptions:
    model_dirs: list = field(default_factory=list)  # empty: the shipped default repository
    default_model: str | None = None
    host: str = "0.0.0.0"
    port: int = 50051  # 0: any free port (see ready_file)
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    metrics_host: str = "0.0.0.0"
    max_batch_size: int = 32
    max_queue_delay_us: int = 0  # Triton's default too: under load batches form while the previous one computes
    max_queue_size: int = 1024
    max_request_bytes: int = 1 << 20
    onnx_threads: int = 1
    stream_window: int = 32  # = the default max batch: 8 flooding streams stay far below max_queue_size
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    grace_s: float = 10.0  # how long shutdown waits for in-flight RPCs
    shutdown_delay_s: float = 0.0  # NOT_SERVING but still serving, so load balancers move away first
    ready_file: Path | None = None  # written (JSON: port, metrics_port, pid) once SERVING
    reuse_port: bool = False  # SO_REUSEPORT: set by --workers for its worker processes only (server/workers.py)

    def batching(self) -> BatchingOptions:
        return BatchingOptions(max_batch_size=self.max_batch_size, max_queue_delay_s=self.max_queue_delay_us / 1e6,
                               max_queue_size=self.max_queue_size, onnx_threads=self.onnx_threads)


def _credentials(o: ServerOptions) -> grpc.ServerCredentials | None:
    if not (o.tls_cert or o.tls_key):
        if o.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (o.tls_cert and o.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    pair = (Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes())
    ca = Path(o.tls_client_ca).read_bytes() if o.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


class InferenceServer:
    def __init__(self, options: ServerOptions, repository: ModelRepository | None = None):
        self.options = options
        # Load and validate every bundle up front: a bad bundle fails start-up, not a request.
        self.repository = repository or ModelRepository(options.model_dirs or None, default_model=options.default_model)
        self.metrics = Metrics()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task | None = None

    async def start(self) -> None:
        o = self.options
        credentials = _credentials(o)
        interceptors = [BearerTokenInterceptor(read_token(o.auth_token_file))] if o.auth_token_file else []
        # One compute thread: ONNX releases the GIL, so the loop keeps a core for gRPC and decoding.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")
        self.models = ServedModels(self.repository, o.batching(), self._executor, self.metrics)
        self.servicer = InferenceServicer(self.models, self.metrics, o.max_request_bytes, o.stream_window)
        self.health = health.aio.HealthServicer()

        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", o.max_request_bytes + _ENVELOPE_BYTES),
                # A second server on the same port must fail, not share it; only --workers' own
                # processes share one port, and its supervisor checked the port was free first.
                ("grpc.so_reuseport", 1 if o.reuse_port else 0),
                # Devices keep idle streams alive with pings; accept them rather than GOAWAY.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_ping_strikes", 0),
                # Backpressure: a fixed per-stream window. BDP probing would grow it (to megabytes,
                # thousands of buffered requests per stream) whenever a client floods.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", http2_stream_window_bytes(o.stream_window)),
            ],
        )
        self._server.add_generic_rpc_handlers([inference_handlers(self.servicer)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        enable_reflection((INFERENCE_SERVICE, HEALTH_SERVICE), self._server)
        address = f"{o.host}:{o.port}"
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # grpc's way of saying the port is taken or the host is wrong
            raise OSError(f"cannot listen on {address}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen on {address}")
        if o.metrics_port is not None:
            self.metrics_port = self.metrics.serve(o.metrics_port, o.metrics_host)

        self.models.start()
        await self._server.start()
        for service in ("", INFERENCE_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d (%s%s), metrics %s, max batch %d, max queue delay %d us",
                 ", ".join(f"{n}:{v}" for n, v in self.repository.models()), o.host, self.port,
                 "TLS" if credentials else "plaintext", ", mutual TLS" if o.tls_client_ca else "",
                 f"on :{self.metrics_port}" if self.metrics_port else "off", o.max_batch_size, o.max_queue_delay_us)
        if o.ready_file:
            _write_ready(Path(o.ready_file), {"port": self.port, "metrics_port": self.metrics_port, "pid": os.getpid()})

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING first, then refuse new work, finish in-flight work, stop. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        grace = self.options.grace_s if grace is None else grace
        log.info("shutting down: NOT_SERVING, draining in-flight work (grace %.1f s)", grace)
        await self.health.enter_graceful_shutdown()
        if self.options.shutdown_delay_s > 0:
            await asyncio.sleep(self.options.shutdown_delay_s)
        self.servicer.drain()
        loop = asyncio.get_running_loop()
        # Queued requests run now rather than after their batching delay.
        closing = loop.create_task(self.models.close())
        # Stop accepting RPCs and give in-flight ones the grace period; once our own inference
        # work is done, end what is left (health watches, reflection) instead of waiting it out.
        stopping = loop.create_task(self._server.stop(grace))
        try:
            await asyncio.wait_for(self.servicer.wait_idle(), grace)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("in-flight work not finished after %.1f s; aborting it", grace)
        await self._server.stop(0)
        await stopping
        await closing
        self._executor.shutdown(wait=True)
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def _write_ready(path: Path, info: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file


async def serve(options: ServerOptions, repository: ModelRepository | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully (a second signal stops at once)."""
    server = InferenceServer(options, repository)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
        else:
            log.warning("second signal: stopping without waiting for in-flight work")
            loop.create_task(server._server.stop(0))

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    await stop.wait()
    await server.stop()
