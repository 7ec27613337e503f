"""A private Docker engine for the container tests, and a base image built without any registry.

Network rule: traffic stays on loopback. The daemon runs without its default bridge and without
iptables rules (`--bridge=none --iptables=false`), on its own data root, exec root, pid file and
socket, so it touches neither the host's network setup nor a system dockerd; containers use host
networking and the server listens on 127.0.0.1 only. Image builds run with no network at all.

No registry is reachable here (`FROM python:3.11-slim` cannot be pulled), so the base image is
made locally: debootstrap a minimal Debian of the host's release from the Debian mirror the host's
apt sources name, then `docker import` it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BASE_IMAGE = "agilenn-test/debian-python:local"


class EngineUnavailable(RuntimeError):
    """No Docker engine can run here; the message says why (the tests skip with it)."""


def _apt_mirror() -> str:
    """The Debian mirror the host's apt sources use (deb822 .sources files or one-line lists)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
    raise EngineUnavailable("no Debian mirror in the apt sources to debootstrap a base image from")


def _codename() -> str:
    text = Path("/etc/os-release").read_text()
    m = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    if not m or "debian" not in text.lower():
        raise EngineUnavailable("the base image is debootstrapped from Debian; this host is not Debian")
    return m.group(1)


class DockerEngine:
    def __init__(self):
        missing = [tool for tool in ("dockerd", "docker", "docker-compose", "debootstrap") if not shutil.which(tool)]
        if missing:
            raise EngineUnavailable(f"{', '.join(missing)} not installed (apt-get install docker.io docker-compose "
                                    "debootstrap; .ci/setup does)")
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd and debootstrap need root here")
        # Short paths: containerd's unix sockets live under the exec root (108-byte limit).
        self.root = Path(tempfile.mkdtemp(prefix="agilenn-dockerd-"))
        self.socket = self.root / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        self.log_path = self.root / "dockerd.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "DockerEngine":
        # Own containerd namespaces too: where a system containerd runs, dockerd uses it instead of
        # starting its own, and this daemon's containers must not mix with a system dockerd's.
        cmd = ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
               "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
               "--pidfile", str(self.root / "dockerd.pid"), "-H", f"unix://{self.socket}",
               "--containerd-namespace", "agilenn-test", "--containerd-plugins-namespace", "agilenn-test-plugins"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {self.process.returncode}: {self._log_tail()}")
            if self.socket.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            if time.monotonic() > end:
                raise EngineUnavailable(f"dockerd not answering after {timeout:.0f} s: {self._log_tail()}")
            time.sleep(0.3)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except FileNotFoundError:
            return ""

    def docker(self, *args, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        out = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw)
        if check and out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def compose(self, compose_file: Path, project: str, *args, check: bool = True,
                timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = ["docker-compose", "-f", str(compose_file), "-p", project, *args]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def build_base_image(self) -> tuple[str, float]:
        """debootstrap + docker import; returns (image name, seconds taken)."""
        start = time.monotonic()
        rootfs = self.root / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
               _codename(), str(rootfs), _apt_mirror()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        # What python:3.11-slim offers and debootstrap does not: a `python` command. Drop apt's caches.
        (rootfs / "usr/bin/python").symlink_to("python3")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
            (rootfs / cache).mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=self.env,
                                  capture_output=True, text=True, timeout=300)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr}")
        shutil.rmtree(rootfs, ignore_errors=True)
        return BASE_IMAGE, time.monotonic() - start

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # dockerd stops its containers and unmounts
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Anything still mounted below the root (a daemon that was killed) must not be deleted through.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
