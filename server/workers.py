"""`agilenn-server --workers N`: N server processes sharing one port, so one host uses every core.

One Python process serves from one core (the GIL: gRPC, decoding and batching run on the event loop),
so N processes bind the same port with SO_REUSEPORT (gRPC's ``grpc.so_reuseport``) and the Linux
kernel spreads incoming connections over them. This is gRPC Python's own recipe for multi-core
servers (grpc/examples/python/multiprocessing); each connection, and so each device stream, stays
with the worker that accepted it.

The supervisor (this module, the process the user started) does what one worker cannot:
- refuses a port that is already taken (the workers set SO_REUSEPORT, so without this check they
  would silently share a port with some other server), and reserves it until the workers listen;
- serves the Prometheus metrics of all workers on one endpoint, summed (prometheus_client's
  multiprocess mode: each worker writes its values to files in a shared directory);
- writes one ready file once every worker is SERVING;
- forwards SIGTERM/SIGINT to every worker, which drain as a single server does, and exits 0 when
  all of them did; a worker that dies on its own is started again.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

log = logging.getLogger("agilenn.server.workers")

_RESTART_DELAY_S = 1.0  # a worker that keeps crashing is restarted at most this often
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerStartError(RuntimeError):
    pass


def _check_and_reserve(host: str, port: int) -> socket.socket:
    """Fail if ``host:port`` is taken, then hold it with an SO_REUSEPORT socket (not listening, so
    it takes no connections) until the workers listen on it; port 0 picks a free port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    if port:
        probe = socket.socket(family, kind, proto)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
            probe.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        finally:
            probe.close()
    reserve = socket.socket(family, kind, proto)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserve.bind(address)
    except OSError as exc:
        reserve.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return reserve


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by SIGKILL), so none is orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _worker(options, log_level: str) -> None:
    """One worker: a plain single-process server (app.serve) on the shared port."""
    # Own process group: a Ctrl-C in the terminal reaches only the supervisor, which forwards one
    # SIGTERM; a second signal would make the worker skip its drain.
    os.setpgrp()
    _die_with_parent()
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s")
    import asyncio

    from agilenn.models.bundle import BundleError

    from .app import serve
    from .cli import install_event_loop

    install_event_loop()
    try:
        asyncio.run(serve(options))
    except (BundleError, ValueError, OSError) as exc:
        print(f"agilenn-server: error: {exc}", file=sys.stderr)
        sys.exit(2)


class Supervisor:
    def __init__(self, options, workers: int, log_level: str = "INFO"):
        self.options = options
        self.n = workers
        self.log_level = log_level
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that has started gRPC
        self._tmp = tempfile.TemporaryDirectory(prefix="agilenn-workers-")
        self._stop_signals = 0
        self.procs: list = [None] * workers
        self.port: int | None = None

    def _spawn(self, i: int):
        ready = Path(self._tmp.name) / f"worker-{i}.json"
        ready.unlink(missing_ok=True)
        opts = dataclasses.replace(self.options, port=self.port, reuse_port=True, metrics_port=None, ready_file=ready)
        proc = self._ctx.Process(target=_worker, args=(opts, self.log_level), name=f"agilenn-worker-{i}")
        proc.start()
        self.procs[i] = proc
        return proc

    def _wait_ready(self, timeout: float = 300.0) -> None:
        end = time.monotonic() + timeout
        pending = set(range(self.n))
        while pending:
            for i in list(pending):
                if (Path(self._tmp.name) / f"worker-{i}.json").exists():
                    pending.discard(i)
                elif not self.procs[i].is_alive():
                    raise WorkerStartError(f"worker {i} exited with {self.procs[i].exitcode} while starting")
            if time.monotonic() > end:
                raise WorkerStartError(f"workers {sorted(pending)} not ready after {timeout:.0f} s")
            time.sleep(0.05)

    def _on_signal(self, signum, _frame) -> None:
        self._stop_signals += 1
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # the second time: workers stop without draining

    def run(self) -> int:
        o = self.options
        from agilenn.models.model_repository import ModelRepository

        # A bad bundle fails here, once and with the single server's message, not in N workers.
        ModelRepository(o.model_dirs or None, default_model=o.default_model)
        reserve = _check_and_reserve(o.host, o.port)
        self.port = reserve.getsockname()[1]
        metrics_dir = Path(self._tmp.name) / "metrics"
        metrics_dir.mkdir()
        # Read by prometheus_client when a worker imports it: values go to files here, summed below.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for i in range(self.n):
                self._spawn(i)
            try:
                self._wait_ready()
            except WorkerStartError as exc:
                self._on_signal(signal.SIGTERM, None)
                raise OSError(str(exc)) from None
            finally:
                reserve.close()  # the workers listen now (or failed): the port is theirs
            metrics_port = self._serve_metrics(metrics_dir) if o.metrics_port is not None else None
            log.info("%d workers serving on %s:%d (pids %s), metrics %s", self.n, o.host, self.port,
                     ", ".join(str(p.pid) for p in self.procs), f"on :{metrics_port}" if metrics_port else "off")
            if o.ready_file:
                info = {"port": self.port, "metrics_port": metrics_port, "pid": os.getpid(),
                        "workers": [p.pid for p in self.procs]}
                tmp = Path(o.ready_file).with_name(Path(o.ready_file).name + ".tmp")
                tmp.write_text(json.dumps(info), encoding="utf-8")
                tmp.replace(o.ready_file)
            return self._supervise()
        finally:
            for proc in self.procs:
                if proc is not None and proc.is_alive():
                    proc.kill()
            self._tmp.cleanup()

    def _serve_metrics(self, metrics_dir: Path) -> int:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))
        server, _thread = start_http_server(self.options.metrics_port, addr=self.options.metrics_host,
                                            registry=registry)
        return server.server_port

    def _supervise(self) -> int:
        last_start = [time.monotonic()] * self.n
        while not self._stop_signals:
            wait([p.sentinel for p in self.procs], timeout=0.5)
            for i, proc in enumerate(self.procs):
                if self._stop_signals or proc.is_alive():
                    continue
                log.warning("worker %d (pid %d) exited with %s; starting it again", i, proc.pid, proc.exitcode)
                time.sleep(max(0.0, last_start[i] + _RESTART_DELAY_S - time.monotonic()))
                last_start[i] = time.monotonic()
                self._spawn(i)
        for proc in self.procs:  # each drains within its --grace; its own exit code says whether it did
            proc.join()
        codes = [p.exitcode for p in self.procs]
        log.info("workers stopped (exit codes %s)", codes)
        return 0 if all(c == 0 for c in codes) else 1


def run_workers(options, workers: int, log_level: str = "INFO") -> int:
    return Supervisor(options, workers, log_level).run()
