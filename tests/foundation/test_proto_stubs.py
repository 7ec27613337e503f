"""The committed Python stubs are exactly what the .proto generates (they cannot drift)."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a dev dependency")
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = generate.generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for f in fresh:
        committed = ROOT / "proto" / "agilenn" / "v1" / f.name
        assert committed.exists(), f"{committed} is not committed; run python proto/generate.py"
        assert committed.read_text() == f.read_text(), f"{committed.name} drifted from the .proto; run python proto/generate.py"


def test_service_shape():
    from agilenn.v1 import inference_pb2

    service = inference_pb2.DESCRIPTOR.services_by_name["Inference"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Infer": (False, False),
        "InferStream": (True, True),
        "GetManifest": (False, False),
        "ListModels": (False, False),
    }
    fields = {f.name for f in inference_pb2.InferResponse.DESCRIPTOR.fields}
    assert {"request_id", "logits", "error", "timings", "channels_received"} <= fields
