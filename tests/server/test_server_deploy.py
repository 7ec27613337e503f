"""Container files, checked without a Docker engine (tests/deploy/test_container.py runs the real
thing where one can run): the compose file parses and names a grpc.health.v1 healthcheck, and the
image's command and healthcheck work when run directly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile_json(instruction: str) -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    matches = re.findall(rf"^{instruction}\s+(.*)$", text, re.M)
    assert matches, f"Dockerfile has no {instruction}"
    return json.loads(re.sub(r"^.*?(\[.*\])\s*$", r"\1", matches[-1]))


def test_compose_file_has_a_server_with_a_grpc_healthcheck():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["server"]
    assert (ROOT / server["build"]["context"] / server["build"]["dockerfile"]).is_file()
    assert any(str(p).split(":")[-1] == "50051" for p in server["ports"])
    test = server["healthcheck"]["test"]
    assert test[0] == "CMD" and "agilenn.server.healthcheck" in test
    assert server["command"][0] == "agilenn-server"


def test_dockerfile_basics():
    text = (ROOT / "Dockerfile").read_text()
    # python:3.11-slim stays the users' default base; tests/deploy builds on a local one instead.
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M) and re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert "pip install --find-links ./wheelhouse ${PIP_INSTALL_FLAGS} ." in text
    assert "agilenn.server.healthcheck" in " ".join(_dockerfile_json("HEALTHCHECK.*CMD"))
    assert _dockerfile_json("CMD")[0] == "agilenn-server"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "tests" in ignored and ".git" in ignored


def test_the_image_command_and_healthcheck_work_when_run_directly(bundle_dir, tmp_path):
    """CMD from the Dockerfile, run here; the repository is synthetic (the shipped one may not be
    trained yet) and the ports are free ones (later flags win in argparse)."""
    ready = tmp_path / "ready.json"
    cmd = _dockerfile_json("CMD") + ["--model-dir", str(bundle_dir), "--host", "127.0.0.1", "--port", "0",
                                     "--metrics-port", "0", "--ready-file", str(ready)]
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < end, "server did not become ready"
            time.sleep(0.05)
        port = json.loads(ready.read_text())["port"]
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        check = compose["services"]["server"]["healthcheck"]["test"][1:]
        check = [sys.executable if c == "python" else c for c in check] + ["--address", f"127.0.0.1:{port}"]
        out = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "SERVING", out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        out = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1  # nobody serving: the healthcheck fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
