"""The generated C library against the Python integer device part, byte for byte, on real
Fashion-MNIST test images; and every C payload through a real agilenn-server."""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest
from agilenn.codec import header_size
from agilenn.models import load_bundle
from agilenn.training.datasets import load_dataset
from fw_lib_helpers import assert_driver_infer_matches, driver_fixture, generated_fixture, shipped_bundle_dir  # noqa: F401 (fixtures)

N_IMAGES = 1000


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(shipped_bundle_dir())


@pytest.fixture(scope="module")
def images():
    return load_dataset("fashion-mnist", "test").images[:N_IMAGES]


@pytest.fixture(scope="module")
def reference(bundle, images):
    return bundle.int8_device().run(images)


def run_driver(driver, images, cap: int, classes: int = 10):
    """[(status, payload, channels_sent, int16 logits)] of `driver run CAP` on the images."""
    out = subprocess.run([str(driver), "run", str(cap)], input=images.tobytes(), capture_output=True, check=True,
                         timeout=120).stdout
    results, pos = [], 0
    for _ in range(len(images)):
        status, length, sent = struct.unpack_from("<III", out, pos)
        pos += 12
        logits = np.frombuffer(out, np.int16, classes, pos)
        pos += 2 * classes
        results.append((status, out[pos:pos + length], sent, logits))
        pos += length
    assert pos == len(out)
    return results


def test_logits_and_indices_equal_python(driver, bundle, images, reference):
    """agn_device_infer alone: the int16 logits and the channel-major centroid indices."""
    assert_driver_infer_matches(driver, bundle, images, reference)


@pytest.mark.parametrize("cap", [0, 100, 60, 20, header_size(0)])
def test_payloads_equal_python(driver, bundle, images, reference, cap):
    """agn_device_run: payload bytes (the bundle's default coder, rans-ctx, coder id 4) and logits
    equal the Python integer device part + FeatureCodec.encode_within, with no budget (cap 0) and
    with byte budgets that drop channels."""
    codec = bundle.codec()
    assert codec.default_coder == "rans-ctx"
    n = len(images) if cap == 0 else 200
    budget = None if cap == 0 else cap
    mismatches = []
    for i, (status, payload, sent, logits) in enumerate(run_driver(driver, images[:n], cap)):
        expected, expected_sent = codec.encode_within(reference.indices[i], budget)
        if status != 0 or payload != expected or sent != expected_sent or not np.array_equal(logits, reference.logits[i]):
            mismatches.append(i)
    assert not mismatches, f"{len(mismatches)} of {n} differ, first image {mismatches[0]}"
    if cap:
        assert all(len(p) <= cap for _, p, _, _ in run_driver(driver, images[:5], cap))
    # the compact header (payload version 2): 0xA0 | coder id 4 (rans-ctx), the model's check byte
    assert all(p[:2] == bytes((0xA4, codec.model_check)) for _, p, _, _ in run_driver(driver, images[:5], cap))


def test_every_c_payload_decodes_on_a_real_server(driver, bundle, images):
    """The C payloads go through agilenn-server (gRPC, real port) and come back as the remote
    logits the remote model gives for them."""
    from agilenn.device_agent.client import RemoteClient
    from agilenn.server.testing import running_server

    results = run_driver(driver, images, 0)
    codec = bundle.codec()
    remote = single_thread_session_of(bundle)
    with running_server(shipped_bundle_dir(), max_batch_size=32) as server:
        # float32 logits on the wire: this compares the server's decode exactly (lean streams default to int16)
        client = RemoteClient(server.address, bundle.manifest, logits_encoding="float32")
        try:
            assert client.wait_connected(30)
            failures = []
            for i, (_, payload, _, _) in enumerate(results):
                reply = client.infer(payload, 30.0)
                if reply.logits is None:
                    failures.append((i, reply.detail))
                    continue
                if i % 50 == 0:  # spot check: the server decoded what the Python decoder decodes
                    feats = codec.decode(payload).features[None]
                    expected = remote.run(["remote_logits"], {"remote_features": feats})[0][0]
                    np.testing.assert_allclose(reply.logits, expected, rtol=1e-4, atol=1e-4)
            assert not failures, f"{len(failures)} payloads refused, first {failures[0]}"
        finally:
            client.close()


def test_combined_prediction_of_the_c_outputs(driver, bundle, images):
    """The C outputs merged as the agent merges them predict as well as the report says (a sanity
    check that logit scale and payload mean what the host thinks)."""
    labels = load_dataset("fashion-mnist", "test").labels[:len(images)]
    codec = bundle.codec()
    remote = single_thread_session_of(bundle)
    scale = bundle.manifest["int8_device"]["logits"]["scale"]
    results = run_driver(driver, images, 0)
    feats = np.stack([codec.decode(p).features for _, p, _, _ in results])
    remote_logits = remote.run(["remote_logits"], {"remote_features": feats})[0]
    local = np.stack([lg for *_, lg in results]).astype(np.float32) * np.float32(scale)
    merged = bundle.merge(local, remote_logits)
    assert (merged.argmax(1) == labels).mean() > 0.88


def single_thread_session_of(bundle):
    from agilenn.device_agent.device_model import single_thread_session

    return single_thread_session(bundle.onnx_path("remote"))
