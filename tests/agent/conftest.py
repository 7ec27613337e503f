"""Fixtures for the device agent tests: bundles, Fashion-MNIST, a real server, an offline reference."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from agilenn.models import DEFAULT_MODEL, DEFAULT_REPOSITORY, ModelRepository
from agilenn.models.bundle import DEVICE_INPUT, REMOTE_INPUT, Bundle
from agilenn.models.synthetic import make_random_bundle


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("bundles") / "synthetic")


@pytest.fixture(scope="session")
def eval_bundle_dir(synthetic_bundle):
    """The shipped default bundle when it exists, else the synthetic one (same 28x28x1 contract).

    AGILENN_AGENT_TEST_BUNDLE=DIR picks another bundle (e.g. one fresh out of training).
    """
    if os.environ.get("AGILENN_AGENT_TEST_BUNDLE"):
        return Path(os.environ["AGILENN_AGENT_TEST_BUNDLE"])
    try:
        return ModelRepository([DEFAULT_REPOSITORY]).resolve(DEFAULT_MODEL).path
    except Exception:
        return synthetic_bundle


@pytest.fixture(scope="module")
def server(synthetic_bundle):
    from agilenn.server.testing import running_server

    with running_server(synthetic_bundle) as srv:
        yield srv


@pytest.fixture(scope="session")
def offline_reference():
    return _offline_reference


def _offline_reference(bundle: Bundle, images: np.ndarray) -> dict:
    """The bundle evaluated without agent or server: the device part the agent uses by default (the
    integer part when the bundle has one, else device.onnx + quantize), dequantize, remote.onnx, merge.

    One image per run, as the agent and an unbatched server do, so float results match bit for bit.
    """
    from agilenn.codec import dequantize
    from agilenn.device_agent.device_model import single_thread_session

    device = single_thread_session(bundle.onnx_path("device"))
    remote = single_thread_session(bundle.onnx_path("remote"))
    codec = bundle.codec()
    int8 = bundle.int8_device() if bundle.has_int8_device else None
    merged, local = [], []
    for image in images:
        if int8 is not None:
            out = int8.run(image[None])
            loc, indices = int8.dequantize_logits(out.logits), out.indices[0]
        else:
            loc, feats = device.run(None, {DEVICE_INPUT: bundle.preprocess(image[None])})
            indices = codec.quantize(feats[0])
        restored = dequantize(indices, codec.centroids)[None]
        (rem,) = remote.run(None, {REMOTE_INPUT: restored.astype(np.float32)})
        merged.append(bundle.merge(loc[0], rem[0]))
        local.append(loc[0])
    merged, local = np.stack(merged), np.stack(local)
    return {"merged": merged, "local": local, "pred": merged.argmax(1), "local_pred": local.argmax(1)}


@pytest.fixture
def serial_agent():
    """start(agent) -> (MCU-side link, bridge): a SerialBridge serving the slave end of a pty pair."""
    from agilenn.device_agent.serial_bridge import SerialBridge
    from agilenn.device_agent.serial_link import SerialLink, open_pty_pair, open_serial

    made = {}

    def start(agent):
        master, path, slave_fd = open_pty_pair()
        agent_link = SerialLink(open_serial(path, 921600))
        os.close(slave_fd)
        bridge = SerialBridge(agent_link, agent)
        stop = threading.Event()
        thread = threading.Thread(target=bridge.serve, args=(stop,), daemon=True)
        thread.start()
        made.update(stop=stop, thread=thread, links=(agent_link, SerialLink(master)))
        return made["links"][1], bridge

    yield start
    if made:
        made["stop"].set()
        made["thread"].join(10)
        for link in made["links"]:
            link.close()
