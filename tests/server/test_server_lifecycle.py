"""Start-up, health transitions, graceful drain, restart, and the command line."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from server_test_helpers import logits_of
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agilenn.models.model_repository import DEFAULT_REPOSITORY
from agilenn.server.testing import RunningServer, ServerStartError, running_server
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _queued(srv) -> float:
    """How many requests the server has accepted (decoded and queued), from its metrics."""
    text = urllib.request.urlopen(srv.metrics_url, timeout=10).read().decode()
    m = re.search(r'^agilenn_request_payload_bytes_count\{model="synthetic",version="1"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait_until(predicate, what):
    import time

    end = time.monotonic() + 60
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_health_and_reflection(server):
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agilenn.v1.Inference"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                       timeout=10))
        names = {s.name for s in reply.list_services_response.service}
        assert {"agilenn.v1.Inference", "grpc.health.v1.Health"} <= names


def test_graceful_shutdown_goes_not_serving_then_drains(bundle_dir, remote):
    # A long queue delay holds accepted requests in the queue while we signal the server.
    srv = RunningServer(bundle_dir, max_batch_size=64, max_queue_delay_us=2_000_000, shutdown_delay=0.5)
    with srv:
        channel = grpc.insecure_channel(srv.address)
        stub = pb_grpc.InferenceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == SERVING

        payloads = [remote.payload(seed=i) for i in range(6)]
        unary = [stub.Infer.future(pb.InferRequest(request_id=i, feature_payload=p), timeout=60)
                 for i, p in enumerate(payloads[:3])]
        release = threading.Event()

        def stream_requests():
            for i, p in enumerate(payloads[3:]):
                yield pb.InferRequest(request_id=10 + i, feature_payload=p)
            release.wait(60)  # keep our side of the stream open

        stream = stub.InferStream(stream_requests(), timeout=60)
        _wait_until(lambda: _queued(srv) >= 6, "six queued requests")

        srv.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING  # health flips before anything is refused
        for i, f in enumerate(unary):  # accepted work is finished, not dropped
            reply = f.result(timeout=60)
            assert reply.request_id == i
            assert list(logits_of(reply)) == pytest.approx(list(remote.logits(payloads[i])), rel=1e-5, abs=1e-6)
        replies = []
        with pytest.raises(grpc.RpcError) as info:
            for reply in stream:
                replies.append(reply)
        assert [r.request_id for r in replies] == [10, 11, 12]
        assert all(r.WhichOneof("result") == "logits" for r in replies)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # then the stream ends: reconnect elsewhere
        release.set()
        assert srv.process.wait(60) == 0
        channel.close()


def test_restart_on_the_same_port(bundle_dir, remote):
    with running_server(bundle_dir, metrics_port=None) as srv:
        port = srv.port
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.InferenceStub(channel)
            payload = remote.payload(seed=1)
            stub.Infer(pb.InferRequest(feature_payload=payload), timeout=30)
            srv.restart(graceful=False)  # a crash
            assert srv.port == port
            reply = stub.Infer(pb.InferRequest(feature_payload=payload), timeout=30, wait_for_ready=True)
            assert len(logits_of(reply)) == 10
            srv.restart()
            assert srv.port == port and srv.health() == "SERVING"
        assert srv.stop() == 0


def test_unusable_model_dirs_fail_with_a_clear_message(tmp_path, bundle_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServerStartError, match="holds no bundle"):
        RunningServer(tmp_path / "empty", metrics_port=None).start()
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    (broken / "remote.onnx").unlink()
    with pytest.raises(ServerStartError, match="missing remote model file"):
        RunningServer(broken, metrics_port=None).start()


def test_no_arguments_serve_the_shipped_default_repository():
    has_bundle = any(DEFAULT_REPOSITORY.glob("*/*/manifest.json"))
    if not has_bundle:
        with pytest.raises(ServerStartError) as info:
            RunningServer(None, metrics_port=None).start()
        assert "--model-dir" in str(info.value) and str(DEFAULT_REPOSITORY) in str(info.value)
        return
    from server_test_helpers import Remote

    from agilenn.models.model_repository import ModelRepository

    remote = Remote(ModelRepository(None).resolve("", ""))
    with running_server(None, metrics_port=None) as srv, grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        reply = stub.ListModels(pb.ListModelsRequest(), timeout=30)
        assert reply.default_model.name == "agilenn-fashion-mnist"
        payload = remote.payload(seed=1, channels_sent=remote.bundle.remote_channels // 2)
        got = logits_of(stub.Infer(pb.InferRequest(feature_payload=payload), timeout=30))
        assert list(got) == pytest.approx(list(remote.logits(payload)), rel=1e-4, abs=1e-5)


def test_command_line_entry_points():
    exe = shutil.which("agilenn-server")
    assert exe, "agilenn-server is not installed (pip install -e .)"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--max-queue-delay-us" in out.stdout and "--model-dir" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "agilenn.server", "--tls-cert", "x.pem"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--tls-key" in bad.stderr


def test_a_taken_port_fails_with_a_clear_message(server, bundle_dir):
    with pytest.raises(ServerStartError, match="cannot listen on"):
        RunningServer(bundle_dir, port=server.port, metrics_port=None).start()
