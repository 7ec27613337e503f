"""`agilenn-server --workers N`: several processes on one port (SO_REUSEPORT), one metrics endpoint,
one drain; and the bind error says only what went wrong."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from server_test_helpers import logits_of

from agilenn.server.testing import RunningServer, ServerStartError, running_server
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc


def _listening_pids(port: int, pids) -> set[int]:
    """Which of ``pids`` hold a listening TCP socket on ``port`` (Linux /proc, no extra package)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    holders = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                holders.add(pid)
    return holders


def _worker_pids(srv: RunningServer) -> list[int]:
    return json.loads(srv._ready.read_text())["workers"]


def _requests_ok(srv: RunningServer) -> float:
    with urllib.request.urlopen(srv.metrics_url, timeout=30) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("agilenn_requests_total{") and 'code="OK"' in line)


def _infer_on_fresh_connections(address: str, payload: bytes, n: int) -> None:
    """n requests, each on its own TCP connection, so the kernel spreads them over the workers."""
    for _ in range(n):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            reply = pb_grpc.InferenceStub(channel).Infer(pb.InferRequest(feature_payload=payload), timeout=30,
                                                          wait_for_ready=True)
            assert len(logits_of(reply)) == 10


def test_two_workers_share_the_port_sum_their_metrics_and_drain(bundle_dir, remote):
    with running_server(bundle_dir, workers=2, metrics_port=0) as srv:
        workers = _worker_pids(srv)
        assert len(workers) == 2 and srv.process.pid not in workers
        assert _listening_pids(srv.port, workers) == set(workers)  # both accept on the one port
        assert _listening_pids(srv.port, [srv.process.pid]) == set()  # the supervisor takes no connections
        _infer_on_fresh_connections(srv.address, remote.payload(seed=3), 12)
        assert _requests_ok(srv) == 12  # one endpoint, both workers' counts summed
        assert srv.stop() == 0  # every worker drained and exited 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_crashed_worker_is_started_again(bundle_dir, remote):
    with running_server(bundle_dir, workers=2, metrics_port=None) as srv:
        first, second = _worker_pids(srv)
        os.kill(first, signal.SIGKILL)
        _infer_on_fresh_connections(srv.address, remote.payload(seed=4), 4)  # the other worker answers
        end = time.monotonic() + 120
        while True:  # the supervisor starts a new worker, which listens on the same port
            holders = _listening_pids(srv.port, [int(p) for p in os.listdir("/proc") if p.isdigit()])
            if len(holders - {second}) == 1 and first not in holders:
                break
            assert time.monotonic() < end, f"no replacement worker: {srv.log_text()}"
            time.sleep(0.2)
        _infer_on_fresh_connections(srv.address, remote.payload(seed=5), 4)
        assert "starting it again" in srv.log_text()
        assert srv.stop() == 0


def test_workers_refuse_a_taken_port(server, bundle_dir):
    """SO_REUSEPORT would let the workers share a port with another server: the supervisor refuses."""
    with pytest.raises(ServerStartError, match="cannot listen on") as info:
        RunningServer(bundle_dir, port=server.port, metrics_port=None, workers=2).start()
    assert "no --model-dir given" not in str(info.value)


def test_workers_report_a_bad_bundle_once_like_one_server(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServerStartError, match="holds no bundle"):
        RunningServer(tmp_path / "empty", metrics_port=None, workers=2).start()


def test_a_taken_port_error_has_no_model_dir_hint(server):
    """The shipped repository loads fine here; the hint about it would send the user the wrong way."""
    with pytest.raises(ServerStartError, match="cannot listen on") as info:
        RunningServer(None, port=server.port, metrics_port=None).start()
    assert "no --model-dir given" not in str(info.value)
