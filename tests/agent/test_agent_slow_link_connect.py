"""An agent connects over a slow radio link even when the bundle's manifest is large: the manifest
check (GetManifest returns the whole manifest.json, 52 KB on disk for the CIFAR-10 bundle) must not be
bounded by the 2 s connect deadline: in the tc-shaped 270 kbps latency run it never was met, and
through this userspace relay at 100 kbps the manifest alone needs ~2.5 s."""

import json

import numpy as np

from agilenn.benchmarks.relay import RelayProcess
from agilenn.device_agent.agent import Agent
from agilenn.models import DEFAULT_REPOSITORY, ModelRepository
from agilenn.server.testing import running_server



def test_agent_connects_and_answers_through_a_100_kbps_link_with_a_large_manifest():
    bundle = ModelRepository([DEFAULT_REPOSITORY]).resolve("agilenn-cifar10")  # its newest version
    assert len(json.dumps(bundle.manifest)) > 25_000  # > 2 s of air time at 100 kbps
    with running_server(bundle.path) as srv, \
            RelayProcess(f"127.0.0.1:{srv.port}", rate_kbps=100, delay_ms=8) as relay:
        with Agent(bundle, f"127.0.0.1:{relay.port}", deadline_ms=5000) as agent:
            assert agent.wait_connected(timeout=60), agent.client.state_detail
            image = np.zeros(bundle.input_shape[1:] + bundle.input_shape[:1], np.uint8)
            result = agent.infer(image)
            assert not result.degraded
