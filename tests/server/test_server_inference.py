"""End to end through the generated stubs against a real server process (synthetic bundle)."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import numpy as np
import pytest
from server_test_helpers import logits_of

from agilenn.server.testing import running_server
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc


@pytest.mark.parametrize("coder", ["ans", "rans", "zstd", "raw"])
@pytest.mark.parametrize("channels_sent", [None, 3, 0])
def test_unary_equals_running_the_remote_model_directly(stub, remote, coder, channels_sent):
    payload = remote.payload(seed=5, channels_sent=channels_sent, coder=coder)
    reply = stub.Infer(pb.InferRequest(request_id=42, feature_payload=payload), timeout=30)
    assert reply.request_id == 42
    assert (reply.model.name, reply.model.version) == ("synthetic", "1")
    np.testing.assert_allclose(logits_of(reply), remote.logits(payload), rtol=1e-5, atol=1e-6)
    expected_channels = remote.bundle.remote_channels if channels_sent is None else channels_sent
    assert reply.channels_received == expected_channels
    assert reply.timings.batch_size >= 1 and reply.timings.total_us > 0


def test_truncated_channels_are_zero_filled(stub, remote):
    full, none = remote.payload(seed=9), remote.payload(seed=9, channels_sent=0)
    got = logits_of(stub.Infer(pb.InferRequest(feature_payload=none), timeout=30))
    # zero channels sent: the remote model sees all-zero features, i.e. only its bias
    zeros = remote.session.run(["remote_logits"], {"remote_features": np.zeros((1, *remote.bundle.remote_feature_shape),
                                                                                np.float32)})[0][0]
    np.testing.assert_allclose(got, zeros, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, remote.logits(full))


def test_stream_answers_in_order_and_survives_bad_payloads(stub, remote):
    requests, expected = [], {}
    for i in range(40):
        if i % 7 == 3:
            requests.append(pb.InferRequest(request_id=1000 + i, feature_payload=b"AG\x01garbage"))
        else:
            payload = remote.payload(seed=i, channels_sent=i % (remote.bundle.remote_channels + 1))
            requests.append(pb.InferRequest(request_id=1000 + i, feature_payload=payload))
            expected[1000 + i] = remote.logits(payload)
    replies = list(stub.InferStream(iter(requests), timeout=60))
    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    for reply in replies:
        if reply.request_id in expected:
            np.testing.assert_allclose(logits_of(reply), expected[reply.request_id], rtol=1e-5, atol=1e-6)
        else:
            assert reply.error.code == pb.INVALID_PAYLOAD
            assert "payload" in reply.error.message
    # pipelined requests of one stream share batches under a 20 ms queue delay
    assert max(r.timings.batch_size for r in replies) > 1


def test_concurrent_streams_share_batches_without_reordering(server, remote):
    results, errors = {}, []

    def device(n):
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.InferenceStub(channel)
                reqs = [pb.InferRequest(request_id=n * 100 + i, feature_payload=remote.payload(seed=n * 100 + i))
                        for i in range(15)]
                results[n] = (reqs, list(stub.InferStream(iter(reqs), timeout=60)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for reqs, replies in results.values():
        assert [r.request_id for r in replies] == [r.request_id for r in reqs]
        for req, reply in zip(reqs, replies):
            np.testing.assert_allclose(logits_of(reply), remote.logits(req.feature_payload), rtol=1e-5, atol=1e-6)


def test_batching_on_and_off_give_identical_logits(server, bundle_dir, remote):
    reqs = [pb.InferRequest(request_id=i, feature_payload=remote.payload(seed=300 + i, channels_sent=i % 7))
            for i in range(24)]

    def run(address):
        with grpc.insecure_channel(address) as channel:
            replies = list(pb_grpc.InferenceStub(channel).InferStream(iter(reqs), timeout=60))
        return replies, np.stack([logits_of(r) for r in replies])

    batched_replies, batched = run(server.address)
    with running_server(bundle_dir, no_batching=True, metrics_port=None) as unbatched_server:
        single_replies, single = run(unbatched_server.address)
    assert max(r.timings.batch_size for r in batched_replies) > 1
    assert {r.timings.batch_size for r in single_replies} == {1}
    # bit-exact on the machines we tried; a tolerance at float rounding keeps other CPUs (kernel choice by batch size) from flaking
    np.testing.assert_allclose(batched, single, rtol=1e-6, atol=1e-7)


def test_bad_payload_is_invalid_argument_and_the_server_carries_on(stub, remote):
    for bad in (b"", b"XX" + bytes(20), remote.payload(seed=1)[:-3] + b"\xff\xff\xff\xff" * 50):
        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(pb.InferRequest(request_id=1, feature_payload=bad), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(pb.InferRequest(request_id=1), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "neither" in info.value.details()
    ok = remote.payload(seed=2)
    np.testing.assert_allclose(logits_of(stub.Infer(pb.InferRequest(feature_payload=ok), timeout=30)),
                               remote.logits(ok), rtol=1e-5, atol=1e-6)


def test_payload_for_another_model_shape_is_rejected(stub, remote, tmp_path):
    from agilenn.models.bundle import load_bundle
    from agilenn.models.synthetic import make_random_bundle

    other = load_bundle(make_random_bundle(tmp_path / "o", channels=10, k=2))
    payload = other.codec().encode(np.ones(other.remote_feature_shape, np.float32))
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(pb.InferRequest(feature_payload=payload), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match" in info.value.details()


def test_unknown_model_is_not_found(stub, remote):
    payload = remote.payload(seed=3)
    for ref in (pb.ModelRef(name="nope"), pb.ModelRef(name="synthetic", version="99")):
        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(pb.InferRequest(model=ref, feature_payload=payload), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.GetManifest(pb.GetManifestRequest(model=ref), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    replies = list(stub.InferStream(iter([
        pb.InferRequest(request_id=1, model=pb.ModelRef(name="nope"), feature_payload=payload),
        pb.InferRequest(request_id=2, model=pb.ModelRef(name="synthetic", version="1"), feature_payload=payload),
    ]), timeout=30))
    assert replies[0].error.code == pb.MODEL_NOT_FOUND and "nope" in replies[0].error.message
    assert replies[0].model.name == "nope"
    np.testing.assert_allclose(logits_of(replies[1]), remote.logits(payload), rtol=1e-5, atol=1e-6)


def test_oversize_input(stub, remote):
    big = remote.payload(seed=4) + bytes(5000)  # over the fixture's 4096-byte limit
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(pb.InferRequest(feature_payload=big), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4096" in info.value.details()
    ok = remote.payload(seed=4)
    replies = list(stub.InferStream(iter([pb.InferRequest(request_id=1, feature_payload=big),
                                          pb.InferRequest(request_id=2, feature_payload=ok)]), timeout=30))
    assert replies[0].error.code == pb.RESOURCE_EXHAUSTED
    np.testing.assert_allclose(logits_of(replies[1]), remote.logits(ok), rtol=1e-5, atol=1e-6)
    # far over the limit: refused by the transport before it is even parsed
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(pb.InferRequest(feature_payload=bytes(200_000)), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_deadlines(stub, remote):
    payload = remote.payload(seed=6)
    # alone in the queue, a request waits the 20 ms queue delay for company: a 1 ms budget runs out
    replies = list(stub.InferStream(iter([pb.InferRequest(request_id=5, feature_payload=payload, timeout_ms=1),
                                          pb.InferRequest(request_id=6, feature_payload=payload)]), timeout=30))
    assert replies[0].request_id == 5 and replies[0].error.code == pb.DEADLINE_EXCEEDED
    np.testing.assert_allclose(logits_of(replies[1]), remote.logits(payload), rtol=1e-5, atol=1e-6)
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(pb.InferRequest(feature_payload=payload, timeout_ms=1), timeout=30)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(pb.InferRequest(feature_payload=payload), timeout=0.002)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    np.testing.assert_allclose(logits_of(stub.Infer(pb.InferRequest(feature_payload=payload), timeout=30)),
                               remote.logits(payload), rtol=1e-5, atol=1e-6)


def test_manifest_and_model_list(stub, bundle):
    reply = stub.GetManifest(pb.GetManifestRequest(), timeout=30)
    assert reply.manifest_json == bundle.manifest_text
    assert (reply.model.name, reply.model.version) == ("synthetic", "1")
    models = stub.ListModels(pb.ListModelsRequest(), timeout=30)
    assert [(m.name, m.version) for m in models.models] == [("synthetic", "1")]
    assert models.default_model.name == "synthetic"


def test_metrics_endpoint(stub, server, remote):
    stub.Infer(pb.InferRequest(feature_payload=remote.payload(seed=7)), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.Infer(pb.InferRequest(feature_payload=b"junk"), timeout=30)
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'agilenn_requests_total{code="OK",model="synthetic",version="1"}' in text
    assert 'agilenn_requests_total{code="INVALID_PAYLOAD",model="synthetic",version="1"}' in text
    for name in ("agilenn_request_duration_seconds_bucket", "agilenn_queue_duration_seconds_bucket",
                 "agilenn_compute_duration_seconds_bucket", "agilenn_batch_size_bucket",
                 "agilenn_request_payload_bytes_bucket", "agilenn_decode_duration_seconds_bucket"):
        assert f'{name}{{le="' in text or f"{name}{{" in text, name


def test_a_full_queue_is_resource_exhausted_and_the_stream_carries_on(bundle_dir, remote):
    # Three requests wait out a 2 s batching delay; the queue holds three, so the next two are refused.
    with running_server(bundle_dir, max_batch_size=64, max_queue_delay_us=2_000_000, max_queue_size=3,
                        metrics_port=None) as srv, grpc.insecure_channel(srv.address) as channel:
        payloads = [remote.payload(seed=i) for i in range(5)]
        replies = list(pb_grpc.InferenceStub(channel).InferStream(
            iter([pb.InferRequest(request_id=i, feature_payload=p) for i, p in enumerate(payloads)]), timeout=60))
    assert [r.request_id for r in replies] == [0, 1, 2, 3, 4]
    assert [r.WhichOneof("result") for r in replies] == ["logits"] * 3 + ["error"] * 2
    assert {r.error.code for r in replies[3:]} == {pb.RESOURCE_EXHAUSTED}
    assert "queue full" in replies[3].error.message
    for r, p in zip(replies[:3], payloads):
        np.testing.assert_allclose(logits_of(r), remote.logits(p), rtol=1e-5, atol=1e-6)
