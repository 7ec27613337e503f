"""Fixtures for the deployment tests: a private Docker engine (tests/deploy/docker_engine.py)."""

from __future__ import annotations

import pytest
from docker_engine import DockerEngine, EngineUnavailable


@pytest.fixture(scope="module")
def docker_engine():
    try:
        engine = DockerEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine can run here: {exc}")
    try:
        try:
            engine.start()
        except EngineUnavailable as exc:
            pytest.skip(f"no Docker engine can run here: {exc}")
        yield engine
    finally:
        engine.close()
