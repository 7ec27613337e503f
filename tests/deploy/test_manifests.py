"""The deployment files agree with the programs they start: the Kubernetes manifest and the
several-replica compose file parse, their server arguments are ones agilenn-server accepts, the
probes ask the health service the agents watch, and the grace periods outlast the drain.
(No cluster runs here; tests/deploy/test_replicas.py runs the client-side balancing for real.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agilenn.device_agent.client import _REPLICA_SERVICE_CONFIG
from agilenn.server.app import INFERENCE_SERVICE
from agilenn.server.cli import _check, build_parser

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes" / "agilenn-server.yaml"
REPLICAS = ROOT / "docker-compose.replicas.yml"


def _server_args(command: list[str]):
    assert command[0] == "agilenn-server"
    parser = build_parser()
    args = parser.parse_args(command[1:])
    _check(parser, args)
    return args


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)s", value)
    assert m, value
    return float(m.group(1))


def test_kubernetes_manifest():
    docs = {d["kind"]: d for d in yaml.safe_load_all(K8S.read_text())}
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    deployment, service, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert service["spec"]["clusterIP"] == "None"  # headless: DNS names every pod for round_robin
    assert deployment["spec"]["replicas"] - pdb["spec"]["maxUnavailable"] >= 2

    (container,) = pod["spec"]["containers"]
    args = _server_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    ready, live = container["readinessProbe"]["grpc"], container["livenessProbe"]["grpc"]
    assert ready["port"] == live["port"] == args.port
    # Readiness asks what the agents' client-side health checks watch.
    assert ready["service"] == INFERENCE_SERVICE == json.loads(_REPLICA_SERVICE_CONFIG)["healthCheckConfig"]["serviceName"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.shutdown_delay + args.grace
    assert float(container["resources"]["requests"]["cpu"]) >= args.workers
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # read-only root: --workers keeps its metrics files in /tmp


def test_replicas_compose_file():
    compose = yaml.safe_load(REPLICAS.read_text())
    server = compose["services"]["server"]
    args = _server_args(server["command"])
    (port_range,) = server["ports"]
    first, last, inner = map(int, re.fullmatch(r"(\d+)-(\d+):(\d+)", port_range).groups())
    assert last - first + 1 == server["deploy"]["replicas"] and inner == args.port
    assert _seconds(server["stop_grace_period"]) > args.shutdown_delay + args.grace
    single = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["server"]
    assert server["healthcheck"] == single["healthcheck"] and server["build"] == single["build"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.replicas.yml"])
def test_docker_compose_accepts_the_files(name):
    out = subprocess.run(["docker-compose", "-f", str(ROOT / name), "config", "-q"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_dockerfile_copies_every_package_folder():
    """`pip install .` in the image needs every folder pyproject.toml maps into agilenn.*; a package
    added without its COPY line only fails when an image is built."""
    import tomllib

    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tops = {folder.split("/")[0] for folder in package_dirs.values()}
    copied = set(re.findall(r"^COPY\s+(?!--)(\S+)\s+\S+\s*$", (ROOT / "Dockerfile").read_text(), re.M))
    assert tops <= copied, f"Dockerfile lacks COPY lines for {sorted(tops - copied)}"
