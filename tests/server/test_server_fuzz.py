"""Seeded fuzzing of a real server over unary calls and streams (issue 9).

Hostile and valid requests (agilenn.server.hostile_requests) go over the wire as raw bytes, as a
client with its own stubs would send them. Asserted: every message the server read is answered
exactly once and in order, with the status the case expects (corrupt payloads: whatever the
reference codec says) and the request_id it carries; valid requests get the remote model's
logits; no stream ends OK with requests unanswered; the log holds no traceback and at most a few
rate-limited lines; the server still answers correctly afterwards.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from server_test_helpers import logits_of

from agilenn.server.errors import GRPC_STATUS
from agilenn.server.hostile_requests import HostileRequests
from agilenn.server.testing import running_server
from agilenn.v1 import inference_pb2 as pb

MAX_REQUEST_BYTES = 4096
GRPC_STATUS_BY_NAME = {pb.ErrorCode.Name(code): status for code, status in GRPC_STATUS.items()}
STREAMS, PER_STREAM, UNARY = 8, 300, 400


@pytest.fixture(scope="module")
def fuzz_server(bundle_dir):
    with running_server(bundle_dir, max_batch_size=8, max_request_bytes=MAX_REQUEST_BYTES, metrics_port=None) as srv:
        srv.started = time.monotonic()
        yield srv


def _check_reply(reply: pb.InferResponse, case, remote):
    status = "OK" if reply.WhichOneof("result") == "logits" else pb.ErrorCode.Name(reply.error.code)
    assert status in case.expect.split("|"), (case.kind, status, reply.error.message)
    assert reply.request_id == case.request_id, case.kind
    if status == "OK" and case.payload is not None:
        np.testing.assert_allclose(logits_of(reply), remote.logits(case.payload), rtol=1e-5, atol=1e-6)
    if status != "OK":
        assert reply.error.message and len(reply.error.message) <= 1024, case.kind


def test_streams_answer_every_message_once_in_order(fuzz_server, bundle, remote):
    results, errors = {}, []

    def device(seed):
        try:
            gen = HostileRequests(bundle, seed=seed)
            cases = [gen.next() for _ in range(PER_STREAM)]
            with grpc.insecure_channel(fuzz_server.address) as channel:
                call = channel.stream_stream("/agilenn.v1.Inference/InferStream")(iter([c.wire for c in cases]),
                                                                                 timeout=120)
                replies = [pb.InferResponse.FromString(raw) for raw in call]
                results[seed] = (cases, replies, call.code())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(seed,)) for seed in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    kinds = set()
    for cases, replies, code in results.values():
        assert code == grpc.StatusCode.OK
        assert len(replies) == len(cases)  # no stream ends OK with requests unanswered
        for case, reply in zip(cases, replies):
            _check_reply(reply, case, remote)
            kinds.add(case.kind)
    assert {"garbage-protobuf", "truncated-protobuf", "zstd-two-frames", "huge-model-name"} <= kinds


def test_unary_calls_get_the_mapped_status(fuzz_server, bundle, remote):
    gen = HostileRequests(bundle, seed=100)
    channel = grpc.insecure_channel(fuzz_server.address)
    infer = channel.unary_unary("/agilenn.v1.Inference/Infer")
    seen = set()
    for _ in range(UNARY):
        case = gen.next()
        allowed = {grpc.StatusCode.OK if e == "OK" else GRPC_STATUS_BY_NAME[e] for e in case.expect.split("|")}
        try:
            reply = pb.InferResponse.FromString(infer(case.wire, timeout=60))
            code = grpc.StatusCode.OK
            _check_reply(reply, case, remote)
        except grpc.RpcError as exc:
            code = exc.code()
            assert len(exc.details()) <= 1024, case.kind  # bounded: a trailer, not a 20 KB echo
        assert code in allowed, (case.kind, code)
        seen.add(code)
    # garbage protobuf is INVALID_ARGUMENT (not UNKNOWN), huge names NOT_FOUND (not RESOURCE_EXHAUSTED)
    assert grpc.StatusCode.UNKNOWN not in seen and grpc.StatusCode.RESOURCE_EXHAUSTED not in seen
    assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND} <= seen
    # the other methods and reflection parse tolerantly too
    for method in ("/agilenn.v1.Inference/GetManifest", "/agilenn.v1.Inference/ListModels"):
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(method)(b"\x0f\xff", timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
    for version in ("v1", "v1alpha"):
        reflection = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as info:
            list(reflection(iter([b"\x0f\xff"]), timeout=30))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, version
    channel.close()


def test_large_messages_in_band_and_oversize_never_ends_ok(fuzz_server, remote):
    good = [pb.InferRequest(request_id=i, feature_payload=remote.payload(seed=i)).SerializeToString() for i in (1, 3)]
    # over --max-request-bytes but under the transport's limit: answered in-band, the stream carries on
    # (the small HTTP/2 stream window still lets one big message through)
    big = pb.InferRequest(request_id=2, feature_payload=bytes(MAX_REQUEST_BYTES + 60_000)).SerializeToString()
    with grpc.insecure_channel(fuzz_server.address) as channel:
        stream = channel.stream_stream("/agilenn.v1.Inference/InferStream")
        call = stream(iter([good[0], big, good[1]]), timeout=60)
        replies = [pb.InferResponse.FromString(raw) for raw in call]
        assert call.code() == grpc.StatusCode.OK
        assert [r.request_id for r in replies] == [1, 2, 3]
        assert replies[1].error.code == pb.RESOURCE_EXHAUSTED and replies[2].WhichOneof("result") == "logits"
        # beyond the transport limit gRPC ends the stream: never with OK
        huge = pb.InferRequest(request_id=5, feature_payload=bytes(MAX_REQUEST_BYTES + 80_000)).SerializeToString()
        call = stream(iter([good[0], huge, good[1]]), timeout=60)
        with pytest.raises(grpc.RpcError) as info:
            list(call)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_afterwards_log_is_quiet_and_server_still_correct(fuzz_server, remote):
    # (runs last in this module)
    payload = remote.payload(seed=77)
    with grpc.insecure_channel(fuzz_server.address) as channel:
        reply = pb.InferResponse.FromString(
            channel.unary_unary("/agilenn.v1.Inference/Infer")(
                pb.InferRequest(request_id=9, feature_payload=payload).SerializeToString(), timeout=30))
    np.testing.assert_allclose(logits_of(reply), remote.logits(payload), rtol=1e-5, atol=1e-6)
    log = fuzz_server.log_text()
    assert "Traceback" not in log
    # client errors: one line at most every 10 s (hundreds of malformed messages were sent)
    client_lines = [line for line in log.splitlines() if "not a valid" in line]
    assert 1 <= len(client_lines) <= (time.monotonic() - fuzz_server.started) / 10 + 1
