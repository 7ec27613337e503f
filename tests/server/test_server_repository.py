"""A Triton-style repository: several models and versions, image inputs for the reference model."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from server_test_helpers import Remote, logits_of

from agilenn.models.bundle import load_bundle
from agilenn.server.testing import running_server
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def repo_stub(repository_dir, bundle_dir):
    # --model-dir twice: a repository folder and a single bundle directory
    with running_server([repository_dir, bundle_dir], default_model="alpha", metrics_port=None) as srv:
        with grpc.insecure_channel(srv.address) as channel:
            yield pb_grpc.InferenceStub(channel)


@pytest.fixture(scope="module")
def alpha1(repository_dir):
    return Remote(load_bundle(repository_dir / "alpha" / "1"))


@pytest.fixture(scope="module")
def alpha2(repository_dir):
    return Remote(load_bundle(repository_dir / "alpha" / "2"))


def test_lists_every_model_and_version(repo_stub):
    reply = repo_stub.ListModels(pb.ListModelsRequest(), timeout=30)
    assert [(m.name, m.version) for m in reply.models] == [("alpha", "1"), ("alpha", "2"), ("beta", "7"),
                                                            ("synthetic", "1")]
    assert (reply.default_model.name, reply.default_model.version) == ("alpha", "2")


def test_selects_by_name_and_version(repo_stub, alpha1, alpha2, repository_dir):
    p = alpha1.payload(seed=1, coder="zstd")  # ans tables differ between versions; zstd payloads fit both
    latest = repo_stub.Infer(pb.InferRequest(feature_payload=p), timeout=30)
    assert (latest.model.name, latest.model.version) == ("alpha", "2")
    np.testing.assert_allclose(logits_of(latest), alpha2.logits(p), rtol=1e-5, atol=1e-6)
    v1 = repo_stub.Infer(pb.InferRequest(model=pb.ModelRef(name="alpha", version="1"), feature_payload=p), timeout=30)
    assert v1.model.version == "1"
    np.testing.assert_allclose(logits_of(v1), alpha1.logits(p), rtol=1e-5, atol=1e-6)
    beta = Remote(load_bundle(repository_dir / "beta" / "7"))
    pb_ = beta.payload(seed=2)
    reply = repo_stub.Infer(pb.InferRequest(model=pb.ModelRef(name="beta"), feature_payload=pb_), timeout=30)
    np.testing.assert_allclose(logits_of(reply), beta.logits(pb_), rtol=1e-5, atol=1e-6)
    manifest = repo_stub.GetManifest(pb.GetManifestRequest(model=pb.ModelRef(name="alpha", version="1")), timeout=30)
    assert manifest.manifest_json == (repository_dir / "alpha" / "1" / "manifest.json").read_text()


def _reference(bundle, pixels_hwc):
    session = ort.InferenceSession(str(bundle.onnx_path("reference")), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": bundle.preprocess(pixels_hwc[None])})[0][0]


def _png(pixels) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def test_images_run_the_reference_model(repo_stub, alpha2):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28, 1), dtype=np.uint8)
    expected = _reference(alpha2.bundle, pixels)
    for fmt, data in (("raw", pixels.tobytes()), ("png", _png(pixels))):
        reply = repo_stub.Infer(pb.InferRequest(image=pb.EncodedImage(format=fmt, data=data)), timeout=30)
        np.testing.assert_allclose(logits_of(reply), expected, rtol=1e-5, atol=1e-5)
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buf, format="JPEG", quality=95)
    reply = repo_stub.Infer(pb.InferRequest(image=pb.EncodedImage(format="jpeg", data=buf.getvalue())), timeout=30)
    assert len(logits_of(reply)) == 10  # lossy: only the shape is comparable


def _png_header_only(width, height) -> bytes:
    """A PNG that claims a huge image (a decompression bomb's header) with a token body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_images(repo_stub):
    pixels = np.zeros((30, 30, 1), np.uint8)
    cases = [
        pb.EncodedImage(format="png", data=_png(pixels)),  # wrong size
        pb.EncodedImage(format="png", data=_png_header_only(60000, 60000)),  # bomb: rejected before decoding
        pb.EncodedImage(format="png", data=b"not a png"),
        pb.EncodedImage(format="raw", data=bytes(10)),
        pb.EncodedImage(format="gif", data=bytes(10)),
        pb.EncodedImage(format="jpeg", data=_png(np.zeros((28, 28, 1), np.uint8))),  # format mismatch
    ]
    for image in cases:
        with pytest.raises(grpc.RpcError) as info:
            repo_stub.Infer(pb.InferRequest(image=image), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, image.format
        assert info.value.details()


def test_image_without_reference_model_is_unsupported(repo_stub):
    req = pb.InferRequest(model=pb.ModelRef(name="beta"), image=pb.EncodedImage(format="raw", data=bytes(784)))
    with pytest.raises(grpc.RpcError) as info:
        repo_stub.Infer(req, timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "reference" in info.value.details()
    [reply] = list(repo_stub.InferStream(iter([req]), timeout=30))
    assert reply.error.code == pb.UNSUPPORTED
