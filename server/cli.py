"""agilenn-server: the command line (python -m agilenn.server is the same)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from agilenn.models.bundle import BundleError
from agilenn.models.model_repository import DEFAULT_REPOSITORY

from .app import ServerOptions, serve

log = logging.getLogger("agilenn.server")


def build_parser() -> argparse.ArgumentParser:
    d = ServerOptions()
    p = argparse.ArgumentParser(
        prog="agilenn-server",
        description="AgileNN inference server: runs the remote NN on feature payloads sent by device agents.",
    )
    p.add_argument("--model-dir", action="append", default=[], type=Path, metavar="DIR",
                   help="a bundle directory, or a model repository (<model>/<version>/manifest.json); repeatable. "
                        f"Default: the shipped repository {DEFAULT_REPOSITORY}")
    p.add_argument("--default-model", help="the model an empty ModelRef selects (default: agilenn-fashion-mnist "
                                           "if served, else the first model found)")
    p.add_argument("--host", default=d.host, help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="gRPC port (default %(default)s; 0: any free port)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics over HTTP on this port (default: off; 0: any free port)")
    p.add_argument("--metrics-host", default=d.metrics_host, help="address of the metrics endpoint (default %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port (SO_REUSEPORT), one per core to use; the metrics "
                        "endpoint sums them (default %(default)s; see docs/server.md, Deploying)")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="requests per ONNX run at most; 1 turns batching off (default %(default)s)")
    g.add_argument("--max-queue-delay-us", type=int, default=d.max_queue_delay_us,
                   help="how long the oldest queued request may wait for its batch to fill, like Triton's "
                        "max_queue_delay_microseconds (default %(default)s; 0: never wait)")
    g.add_argument("--no-batching", action="store_true", help="same as --max-batch-size 1")
    g.add_argument("--max-queue-size", type=int, default=d.max_queue_size,
                   help="queued requests per model before RESOURCE_EXHAUSTED (default %(default)s)")
    g.add_argument("--onnx-threads", type=int, default=d.onnx_threads,
                   help="onnxruntime intra-op threads (default %(default)s, leaving a core to the event loop)")
    g.add_argument("--stream-window", type=int, default=d.stream_window,
                   help="in-flight requests per stream before the server stops reading it (default %(default)s)")
    lim = p.add_argument_group("limits and shutdown")
    lim.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes,
                     help="largest feature payload or image accepted (default %(default)s)")
    lim.add_argument("--grace", type=float, default=d.grace_s,
                     help="seconds shutdown waits for in-flight work (default %(default)s)")
    lim.add_argument("--shutdown-delay", type=float, default=d.shutdown_delay_s,
                     help="seconds to keep serving after health turns NOT_SERVING (default %(default)s)")
    sec = p.add_argument_group("security")
    sec.add_argument("--tls-cert", type=Path, help="PEM server certificate (chain)")
    sec.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    sec.add_argument("--tls-client-ca", type=Path, help="PEM CA bundle: require client certificates (mutual TLS)")
    sec.add_argument("--auth-token-file", type=Path,
                     help="require 'authorization: Bearer <token>' with the token in this file (health is exempt)")
    p.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)  # testing.running_server learns the ports here
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        model_dirs=list(args.model_dir), default_model=args.default_model, host=args.host, port=args.port,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host, max_batch_size=1 if args.no_batching else args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us, max_queue_size=args.max_queue_size,
        max_request_bytes=args.max_request_bytes, onnx_threads=args.onnx_threads, stream_window=args.stream_window,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        auth_token_file=args.auth_token_file, grace_s=args.grace, shutdown_delay_s=args.shutdown_delay,
        ready_file=args.ready_file,
    )


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_batch_size < 1:
        p.error("--max-batch-size must be >= 1")
    if args.max_queue_delay_us < 0:
        p.error("--max-queue-delay-us must be >= 0")
    if args.max_queue_size < 1 or args.stream_window < 1 or args.onnx_threads < 1:
        p.error("--max-queue-size, --stream-window and --onnx-threads must be >= 1")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if args.max_request_bytes < 64:
        p.error("--max-request-bytes must be >= 64")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("TLS needs both --tls-cert and --tls-key")
    if args.tls_client_ca and not args.tls_cert:
        p.error("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            p.error(f"--{name.replace('_', '-')}: {path} is not a file")


def install_event_loop() -> str:
    """uvloop when available: a faster loop for the many small messages this server handles."""
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not available; using the default asyncio event loop")
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loop_name = install_event_loop()
    log.info("event loop: %s", loop_name)
    from agilenn.codec import native

    log.info("rANS payload decoder: %s", "C (the device's coder, agilenn.codec._agn_rans)" if native.library()
             else "Python (no C build of the device's coder, or AGILENN_NATIVE_CODER=0)")
    try:
        if args.workers > 1:
            from .workers import run_workers

            return run_workers(options_from_args(args), args.workers, args.log_level)
        asyncio.run(serve(options_from_args(args)))
    except (BundleError, ValueError, OSError) as exc:
        hint = ""
        if isinstance(exc, BundleError) and not args.model_dir:  # only a model problem has to do with the repository
            hint = (f" (no --model-dir given, so the shipped repository {DEFAULT_REPOSITORY} was used; train and "
                    "export a bundle there, or pass --model-dir)")
        print(f"agilenn-server: error: {exc}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
