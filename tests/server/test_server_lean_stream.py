"""Lean streams (v1.1, docs/protocol.md "Lean streams") and backward compatibility with v1 clients.

A v1 client is simulated with the v1 contract as released (tests/server/data/inference_v1.proto, a
frozen copy with only its package renamed, so both can live in one process): it encodes requests
and decodes replies with the v1 message classes against the new server.
"""

from __future__ import annotations

import importlib
import sys

import grpc
import numpy as np
import pytest
from server_test_helpers import logits_of

from agilenn.server.logits import decode_logits, encode_logits
from agilenn.v1 import inference_pb2 as pb

V1_PROTO = "tests/server/data/inference_v1.proto"


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """The released v1 message classes (package agilenn.v1frozen), generated with protoc."""
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is a dev dependency")
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("v1stubs")
    src = root / V1_PROTO
    assert protoc.main(["protoc", f"-I{src.parent}", f"--python_out={out}", src.name]) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("inference_v1_pb2")
    finally:
        sys.path.remove(str(out))


def _v1_stream(server, v1, requests):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream("/agilenn.v1.Inference/InferStream",
                                     request_serializer=v1.InferRequest.SerializeToString,
                                     response_deserializer=lambda raw: raw)
        return list(call(iter(requests), timeout=60))


def test_the_new_contract_only_adds_fields(v1):
    """proto3 evolution: every v1 field keeps its number, name, type and repetition; enums keep their values."""
    for name, old in v1.DESCRIPTOR.message_types_by_name.items():
        new = pb.DESCRIPTOR.message_types_by_name[name]
        for f in old.fields:
            g = new.fields_by_number[f.number]
            assert (g.name, g.type, g.is_repeated) == (f.name, f.type, f.is_repeated), f"{name}.{f.name} changed"
    for name, old in v1.DESCRIPTOR.enum_types_by_name.items():
        new = pb.DESCRIPTOR.enum_types_by_name[name]
        assert {v.name: v.number for v in old.values}.items() <= {v.name: v.number for v in new.values}.items()


def test_a_v1_client_gets_v1_replies(server, v1, remote):
    """v1-style messages (model and timeout in every one, no stream options): full replies with the
    model, timings, channels and float32 logits, exactly as before."""
    requests, expected = [], []
    for i in range(6):
        payload = remote.payload(seed=i, channels_sent=3 if i == 2 else None)
        requests.append(v1.InferRequest(request_id=10 + i, model=v1.ModelRef(name="synthetic"),
                                        feature_payload=payload, timeout_ms=30_000))
        expected.append(remote.logits(payload))
    requests.insert(3, v1.InferRequest(request_id=99, feature_payload=b"AG\x01garbage"))
    raw = _v1_stream(server, v1, requests)
    replies = [v1.InferResponse.FromString(r) for r in raw]
    # nothing a v1 parser would not know: none of the fields added since
    for r in raw:
        new = pb.InferResponse.FromString(r)
        assert not (new.logits.float16 or new.logits.int8 or new.logits.int16 or new.logits.scale)
    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    good = [r for r in replies if r.request_id != 99]
    for reply, want in zip(good, expected):
        assert (reply.model.name, reply.model.version) == ("synthetic", "1")
        assert reply.timings.total_us > 0 and reply.timings.batch_size >= 1
        assert reply.channels_received in (3, remote.bundle.remote_channels)
        np.testing.assert_allclose(np.asarray(reply.logits.values, np.float32), want, rtol=1e-5, atol=1e-6)
    bad = replies[3]
    assert bad.WhichOneof("result") == "error" and bad.error.code == v1.INVALID_PAYLOAD


def test_a_lean_stream_sets_its_defaults_once(stub, remote, bundle):
    """The first message names the model and timeout and asks for int16 logits, no timings; later
    messages are payload only; replies carry the logits and nothing else."""
    options = pb.StreamOptions(logits_encoding=pb.LOGITS_INT16)
    payloads = [remote.payload(seed=20 + i) for i in range(5)]
    requests = [pb.InferRequest(model=pb.ModelRef(name="synthetic", version="1"), timeout_ms=30_000,
                                stream_options=options, feature_payload=payloads[0])]
    requests += [pb.InferRequest(feature_payload=p) for p in payloads[1:]]
    assert all(r.ByteSize() <= len(p) + 3 for r, p in zip(requests[1:], payloads[1:]))
    replies = list(stub.InferStream(iter(requests), timeout=60))
    assert len(replies) == 5
    for reply, p in zip(replies, payloads):
        assert reply.WhichOneof("result") == "logits"
        assert not reply.HasField("model") and not reply.HasField("timings") and reply.channels_received == 0
        assert reply.request_id == 0 and list(reply.logits.values) == [] and len(reply.logits.int16) == 2 * 10
        want = remote.logits(p)
        np.testing.assert_allclose(decode_logits(reply.logits), want, atol=np.abs(want).max() / 32767)
        assert reply.ByteSize() <= 2 + 2 + 20 + 5
    # what the client asked for is what it gets, on an error too
    options = pb.StreamOptions(timings=True, model=True, channels_received=True, logits_encoding=pb.LOGITS_FLOAT16)
    requests = [pb.InferRequest(request_id=7, model=pb.ModelRef(name="synthetic"), stream_options=options,
                                feature_payload=payloads[0]),
                pb.InferRequest(request_id=8, feature_payload=b"AG\x01garbage")]
    first, bad = stub.InferStream(iter(requests), timeout=60)
    assert (first.request_id, first.model.version, first.channels_received) == (7, "1", remote.bundle.remote_channels)
    assert first.timings.total_us > 0 and len(first.logits.float16) == 20
    assert bad.request_id == 8 and bad.error.code == pb.INVALID_PAYLOAD and bad.timings.total_us > 0


def test_lean_defaults_apply_to_later_messages_only_when_they_leave_them_unset(stub, remote):
    """The stream's model is inherited by messages without one; a message naming another model
    is answered for that one (here: unknown, so MODEL_NOT_FOUND, and the stream carries on)."""
    p = remote.payload(seed=30)
    requests = [pb.InferRequest(model=pb.ModelRef(name="synthetic"), stream_options=pb.StreamOptions(),
                                feature_payload=p),
                pb.InferRequest(model=pb.ModelRef(name="no-such-model"), feature_payload=p),
                pb.InferRequest(feature_payload=p)]
    a, b, c = stub.InferStream(iter(requests), timeout=60)
    assert a.WhichOneof("result") == "logits" and c.WhichOneof("result") == "logits"
    assert b.error.code == pb.MODEL_NOT_FOUND
    np.testing.assert_allclose(logits_of(c), remote.logits(p), rtol=1e-5, atol=1e-6)  # float32: the default


def test_stream_options_after_the_first_message_change_nothing(stub, remote):
    p = remote.payload(seed=31)
    requests = [pb.InferRequest(request_id=1, feature_payload=p),
                pb.InferRequest(request_id=2, feature_payload=p,
                                stream_options=pb.StreamOptions(logits_encoding=pb.LOGITS_INT8))]
    for reply in stub.InferStream(iter(requests), timeout=60):
        assert reply.HasField("timings") and reply.HasField("model") and len(reply.logits.values) == 10


@pytest.mark.parametrize("encoding", ["float32", "float16", "int16", "int8"])
def test_logits_encodings_round_trip(encoding):
    rng = np.random.default_rng(0)
    for x in (rng.normal(0, 5, 10).astype(np.float32), np.zeros(10, np.float32), np.float32([1e-3, -2.0, 7.5])):
        back = decode_logits(pb.Logits.FromString(encode_logits(x, encoding).SerializeToString()))
        step = {"float32": 0, "float16": 2 ** -10, "int16": 1 / 32767, "int8": 1 / 127}[encoding]
        assert back.shape == x.shape
        np.testing.assert_allclose(back, x, atol=np.abs(x).max() * step / 2 * 1.01 + 1e-7, rtol=step)


def test_bad_compact_logits_are_named():
    from agilenn.server.logits import LogitsError

    with pytest.raises(LogitsError, match="scale"):
        decode_logits(pb.Logits(int16=b"\x00\x01", scale=0.0))
    with pytest.raises(LogitsError, match="whole number"):
        decode_logits(pb.Logits(float16=b"\x00\x01\x02"))


def test_the_docs_worked_example_byte_for_byte():
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc[doc.index("### Lean streams"):doc.index("### Ordering and delivery")]
    first_text = section[section.index("first:"):section.index("later:")]
    later_text = section[section.index("later:"):].split("\n\n")[0]
    hexbytes = lambda text: bytes.fromhex("".join(re.findall(r"\b[0-9a-f]{2}\b", text.split(":", 1)[1])))  # noqa: E731
    first = pb.InferRequest(model=pb.ModelRef(name="agilenn-fashion-mnist", version="1"), timeout_ms=5000,
                            stream_options=pb.StreamOptions(logits_encoding=pb.LOGITS_INT16), feature_payload=b"AG\x01")
    assert hexbytes(first_text) == first.SerializeToString()
    assert hexbytes(later_text) == pb.InferRequest(feature_payload=b"AG\x01").SerializeToString()
