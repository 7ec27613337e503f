"""Fixtures for the server tests: synthetic bundles and real servers in subprocesses."""

from __future__ import annotations

import grpc
import pytest
from server_test_helpers import Remote

from agilenn.models.bundle import load_bundle
from agilenn.models.synthetic import make_random_bundle
from agilenn.server.testing import running_server
from agilenn.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("bundle") / "synthetic", seed=1)


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def repository_dir(tmp_path_factory):
    """A Triton-style repository: two models, one of them in two versions, one without reference.onnx."""
    root = tmp_path_factory.mktemp("repo")
    make_random_bundle(root / "alpha" / "1", name="alpha", version="1", seed=11)
    make_random_bundle(root / "alpha" / "2", name="alpha", version="2", seed=12)
    make_random_bundle(root / "beta" / "7", name="beta", version="7", seed=13, channels=6, k=1,
                       with_reference=False, default_coder="zstd")
    return root


@pytest.fixture(scope="session")
def remote(bundle):
    return Remote(bundle)


@pytest.fixture(scope="module")
def server(bundle_dir):
    """A batching server (a long queue delay makes concurrent requests share batches)."""
    with running_server(bundle_dir, max_batch_size=16, max_queue_delay_us=20000, max_request_bytes=4096) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.InferenceStub(channel)
