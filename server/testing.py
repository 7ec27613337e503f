"""A real server in a subprocess, for tests and benchmarks (server, device agent, benchmarks).

    from agilenn.server.testing import running_server

    with running_server(bundle_dir, max_batch_size=8) as srv:
        channel = grpc.insecure_channel(srv.address)
        ...
        srv.restart()  # same port: for the agent's reconnect tests

Keyword options become command-line flags of ``python -m agilenn.server``: ``max_batch_size=8`` ->
``--max-batch-size 8``, ``no_batching=True`` -> ``--no-batching``, a list repeats the flag, None or
False leaves it out. The server binds a free port (or ``port=``) and reports it through a ready
file; the context manager returns once grpc.health.v1 says SERVING and always stops the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class ServerStartError(RuntimeError):
    """The server process exited or did not become SERVING in time; the message holds its log."""


def _flags(options: dict) -> list[str]:
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


class RunningServer:
    def __init__(self, model_dirs=None, *, port: int = 0, metrics_port: int | None = 0, startup_timeout: float = 60.0,
                 env: dict | None = None, extra_args=(), **options):
        if model_dirs is None:
            model_dirs = []
        elif isinstance(model_dirs, (str, os.PathLike)):
            model_dirs = [model_dirs]
        self.model_dirs = [Path(p) for p in model_dirs]
        self.options = dict(options)
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.env = env
        self.port = port
        self.metrics_port = metrics_port
        self.process: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="agilenn-server-")
        self.log_path = Path(self._tmp.name) / "server.log"
        self._ready = Path(self._tmp.name) / "ready.json"
        self._tls = bool(options.get("tls_cert"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "agilenn.server", "--host", "127.0.0.1", "--port", str(self.port),
               "--ready-file", str(self._ready)]
        for d in self.model_dirs:
            cmd += ["--model-dir", str(d)]
        if self.metrics_port is not None:
            cmd += ["--metrics-port", str(self.metrics_port)]
        return cmd + _flags(self.options) + self.extra_args

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> "RunningServer":
        if self.is_running():
            raise RuntimeError("server already running")
        self._ready.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        end = time.monotonic() + self.startup_timeout
        while not self._ready.exists():
            if self.process.poll() is not None:
                raise ServerStartError(f"server exited with {self.process.returncode}:\n{self.log_text()}")
            if time.monotonic() > end:
                raise ServerStartError(f"server not ready after {self.startup_timeout:.0f} s:\n{self.log_text()}")
            time.sleep(0.05)
        info = json.loads(self._ready.read_text(encoding="utf-8"))
        # Keep the ports: restart() reuses them, so clients reconnect to the same address.
        self.port = info["port"]
        if self.metrics_port is not None:
            self.metrics_port = info["metrics_port"]
        if self._tls:
            return  # the ready file is written only after health is SERVING; TLS clients need certs to ask
        status = self.health(timeout=max(1.0, end - time.monotonic()))
        if status != "SERVING":
            raise ServerStartError(f"server health is {status}:\n{self.log_text()}")

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """grpc.health.v1 status name, or the error code's name (plaintext servers)."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=True)
            except grpc.RpcError as exc:
                return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    @property
    def pids(self) -> list[int]:
        """The processes doing the serving: the workers under --workers N, else the server itself."""
        try:
            info = json.loads(self._ready.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return [self.process.pid] if self.process else []
        return info.get("workers") or [info["pid"]]

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.is_running():
            self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful: SIGTERM, wait for the drain, SIGKILL if it takes longer than timeout."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> int | None:
        """Abrupt: SIGKILL (a crashed server)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        return self.process.returncode

    def restart(self, graceful: bool = True) -> "RunningServer":
        """Stop (SIGTERM, or SIGKILL with graceful=False) and start again on the same ports."""
        self.stop() if graceful else self.kill()
        return self.start()

    def close(self) -> None:
        try:
            self.stop(timeout=15.0)
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> "RunningServer":
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def running_server(model_dirs=None, **options):
    """Start ``python -m agilenn.server`` (see the module docstring), yield a RunningServer, stop it."""
    server = RunningServer(model_dirs, **options)
    try:
        server.start()
        yield server
    finally:
        server.close()
