"""`docker compose up server`, for real: build the image, start it with the repository's compose
file, wait for its healthcheck, replay Fashion-MNIST through it with agilenn-agent from the host,
compare with the same replay against a server run without a container, then `down` and check the
server drained (exit code 0).

The compose file is used as it is, except what the network rule needs (docker_engine.py): the
service runs with host networking on 127.0.0.1 and free ports (compose v1 cannot drop `ports:` in
an override when `network_mode: host` is set, so the variant is generated), and the build is an
offline one (wheelhouse, `--no-index`, no network) on a locally debootstrapped base image.

Prints the image size, build time and cold start (run `pytest -s` to see them; benchmarks/RESULTS.md
quotes them).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from agilenn.server.healthcheck import check
from agilenn.server.testing import running_server

ROOT = Path(__file__).resolve().parents[2]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 200
IMAGE = "agilenn-server:container-test"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build_context(ctx: Path) -> None:
    """What the Dockerfile copies (nothing else), plus a wheelhouse for the offline build.

    The runtime dependencies are pinned to the versions installed here, so the container computes
    with the same onnxruntime and numpy as the run it is compared with.
    """
    dockerfile = (ROOT / "Dockerfile").read_text()
    for src in re.findall(r"^COPY\s+(?!--)(.+?)\s+\S+\s*$", dockerfile, re.M):
        for item in src.split():
            if item == "deploy/wheelhouse":
                continue
            (shutil.copytree if (ROOT / item).is_dir() else shutil.copy2)(
                ROOT / item, ctx / item, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / item).is_dir() else {}))
    shutil.copy2(ROOT / "Dockerfile", ctx / "Dockerfile")
    shutil.copy2(ROOT / ".dockerignore", ctx / ".dockerignore")
    wheels = ctx / "deploy" / "wheelhouse"
    wheels.mkdir(parents=True)
    pins = []
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    (ctx / "constraints.txt").write_text("\n".join(pins) + "\n")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheels),
                          "-c", str(ctx / "constraints.txt"), str(ctx), "setuptools>=68", "wheel"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"pip wheel failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def _host_network_variant(ctx: Path, base: str, port: int, metrics_port: int) -> Path:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["server"]
    server.pop("ports")
    server["network_mode"] = "host"
    server["image"] = IMAGE
    server["build"] = {**server["build"], "context": str(ctx), "network": "none",
                       "args": {"BASE": base, "PIP_INSTALL_FLAGS": "--no-index"}}
    command = [{"50051": str(port), "9090": str(metrics_port)}.get(a, a) for a in server["command"]]
    server["command"] = command + ["--host", "127.0.0.1", "--metrics-host", "127.0.0.1"]
    test = server["healthcheck"]["test"]
    assert "127.0.0.1:50051" in test, f"the compose healthcheck changed: update this test ({test})"
    server["healthcheck"]["test"] = [f"127.0.0.1:{port}" if a == "127.0.0.1:50051" else a for a in test]
    server["restart"] = "no"  # a crash must fail the test, not be hidden by a restart
    path = ctx / "docker-compose.host-network.yml"
    path.write_text(yaml.safe_dump(compose, sort_keys=False))
    return path


def _replay(address: str) -> tuple[list[dict], dict]:
    agent = shutil.which("agilenn-agent")
    cmd = [agent] if agent else [sys.executable, "-m", "agilenn.device_agent.cli"]
    out = subprocess.run(cmd + ["--dataset", "fashion-mnist", "--limit", str(N_IMAGES), "--server", address,
                                "--json", "--connect-wait-s", "30"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return lines[:-1], lines[-1]


def _health_status(engine, container: str) -> str:
    out = engine.docker("inspect", "-f", "{{.State.Health.Status}} {{.State.Status}}", container, check=False)
    return out.stdout.strip() if out.returncode == 0 else f"inspect failed: {out.stderr.strip()}"


@pytest.mark.timeout(1500)
def test_compose_up_server_answers_like_the_host_and_drains_on_down(docker_engine, tmp_path):
    engine = docker_engine
    numbers = {}
    base, numbers["base_image_s"] = engine.build_base_image()
    ctx = tmp_path / "context"
    ctx.mkdir()
    t = time.monotonic()
    _build_context(ctx)
    numbers["wheelhouse_s"] = time.monotonic() - t
    port, metrics_port = _free_port(), _free_port()
    compose_file = _host_network_variant(ctx, base, port, metrics_port)
    project = "agilenntest"

    t = time.monotonic()
    engine.compose(compose_file, project, "build", "server")
    numbers["build_s"] = time.monotonic() - t
    numbers["image_mb"] = int(engine.docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout) / 1e6
    numbers["base_mb"] = int(engine.docker("image", "inspect", "-f", "{{.Size}}", base).stdout) / 1e6
    # Lean: no compilers, no torch in the image.
    lean = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
                         "for c in gcc cc g++ c++ clang; do command -v $c; done; "
                         "python -c 'import torch' 2>/dev/null && echo torch", check=False)
    assert lean.stdout.strip() == "", f"the image should be lean, found: {lean.stdout}"

    try:
        t = time.monotonic()
        engine.compose(compose_file, project, "up", "-d", "server")
        container = engine.compose(compose_file, project, "ps", "-q", "server").stdout.strip()
        assert container
        drivers = set(engine.docker("network", "ls", "--format", "{{.Driver}}").stdout.split())
        assert drivers <= {"host", "null"}, f"the test engine made a network: {drivers}"
        answered = None
        while True:
            status = _health_status(engine, container)
            if answered is None and check(f"127.0.0.1:{port}", timeout=1.0) == "SERVING":
                answered = time.monotonic() - t
            if status.startswith("healthy"):
                break
            assert "exited" not in status and "inspect failed" not in status, (
                status, engine.docker("logs", container, check=False).stdout[-3000:])
            assert time.monotonic() - t < 180, f"not healthy after 180 s: {status}"
            time.sleep(0.2)
        numbers["cold_start_to_healthy_s"] = time.monotonic() - t
        numbers["cold_start_to_serving_s"] = answered

        lines, summary = _replay(f"127.0.0.1:{port}")
        assert summary["n"] == N_IMAGES and summary["errors"] == 0
        assert summary["degraded"] == 0, summary["degraded_reasons"]
        numbers["accuracy"] = summary["accuracy"]

        # docker wait outlives `down`'s removal of the container and prints its exit code.
        waiter = subprocess.Popen(["docker", "wait", container], env=engine.env, stdout=subprocess.PIPE, text=True)
        logs = subprocess.Popen(["docker", "logs", "-f", container], env=engine.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        t = time.monotonic()
        engine.compose(compose_file, project, "down")
        numbers["down_s"] = time.monotonic() - t
        exit_code = waiter.communicate(timeout=60)[0].strip()
        log_text = logs.communicate(timeout=60)[0]
        assert exit_code == "0", f"exit code {exit_code!r}:\n{log_text[-3000:]}"
        assert "draining in-flight work" in log_text and "stopped" in log_text, log_text[-3000:]
    finally:
        engine.compose(compose_file, project, "down", check=False)

    # The same replay against the same bundle without a container: same answers.
    with running_server(None, metrics_port=None) as srv:
        host_lines, host_summary = _replay(srv.address)
    assert host_summary["degraded"] == 0
    assert summary["accuracy"] == host_summary["accuracy"]
    assert [x["prediction"] for x in lines] == [x["prediction"] for x in host_lines]
    print("\ncontainer: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in numbers.items()}))
