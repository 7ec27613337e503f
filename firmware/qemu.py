"""The firmware in QEMU: qemu-system-arm with the agent's UART on a pty, the camera and the log on sockets.

    with EmulatedBoard(elf, images) as board:     # starts qemu-system-arm -M mps2-an500 ... -icount shift=0
        board.agent_port                           # /dev/pts/N: give it to agilenn-agent --port
        for line in board.results(100): ...        # one dict per image the firmware finished

UART0 (the agent) is a pty, as a USB serial adapter would be. The camera (UART1) and the log
(UART2) are TCP sockets this process listens on before QEMU starts: QEMU connects to them before
the CPU runs, so no camera request or log line is lost (a pty drops what is written before its
other end opens). `-icount shift=0` makes one instruction one nanosecond of virtual time, which is
what the firmware's instruction count rests on (firmware/board/mps2-an500/board.h).
"""

from __future__ import annotations

import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

PTY_LINE = re.compile(r"char device redirected to (\S+) \(label (\S+)\)")
CAMERA_REQUEST = 0x01  # the firmware's "next image, please" (firmware/app/main.c)
LOG_FIELDS = ("class", "local", "degraded", "reason", "tries", "payload", "channels", "instructions", "to_payload",
              "stack")


class QemuError(RuntimeError):
    pass


def qemu_command(elf, machine: str, camera_port: int, log_port: int, qemu: str = "qemu-system-arm",
                 extra_args=()) -> list[str]:
    return [qemu, "-M", machine, "-display", "none", "-monitor", "none",
            "-serial", "pty",  # UART0: the agent
            "-serial", f"tcp:127.0.0.1:{camera_port}",  # UART1: the camera
            "-serial", f"tcp:127.0.0.1:{log_port}",  # UART2: the log
            "-kernel", str(elf), "-icount", "shift=0", *extra_args]


def parse_log_line(line: str) -> dict | None:
    """'image 3 class 1 local 1 degraded 0 reason 0 ...' -> {'image': 3, 'class': 1, ...}; None for other lines."""
    parts = line.split()
    if len(parts) < 2 or parts[0] != "image":
        return None
    try:
        values = {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    except ValueError:
        return None
    return values if all(k in values for k in LOG_FIELDS) else None


class EmulatedBoard:
    def __init__(self, elf, images: np.ndarray, machine: str = "mps2-an500", qemu: str | None = None,
                 startup_timeout_s: float = 30.0, extra_args=()):
        self.elf = Path(elf)
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.machine = machine
        self.qemu = qemu or shutil.which("qemu-system-arm")
        if self.qemu is None:
            raise QemuError("qemu-system-arm is not installed (Debian: apt-get install qemu-system-arm)")
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)  # more qemu options, e.g. the profiler's -d exec
        self.proc: subprocess.Popen | None = None
        self.agent_port: str | None = None
        self.images_served = 0
        self.images_allowed = len(self.images)  # release(): the camera serves no image past this many
        self._camera_wake = threading.Event()
        self.log_lines: list[str] = []
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._qemu_output: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "EmulatedBoard":
        camera, log = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
        cmd = qemu_command(self.elf, self.machine, camera.getsockname()[1], log.getsockname()[1], self.qemu,
                           self.extra_args)
        self.command = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        for target, sock in ((self._camera, camera), (self._log, log)):
            t = threading.Thread(target=target, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)
        end = time.monotonic() + self.startup_timeout_s
        while self.agent_port is None:
            line = self.proc.stdout.readline()
            if not line:
                raise QemuError(f"qemu-system-arm exited before giving its pty:\n{''.join(self._qemu_output)}")
            self._qemu_output.append(line)
            m = PTY_LINE.search(line)
            if m and m.group(2) == "serial0":
                self.agent_port = m.group(1)
            if time.monotonic() > end:
                raise QemuError("qemu-system-arm did not report its pty in time")
        threading.Thread(target=self._drain_qemu, daemon=True).start()
        return self

    def _drain_qemu(self) -> None:
        for line in self.proc.stdout:
            self._qemu_output.append(line)

    def close(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "EmulatedBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the camera and the log ---------------------------------------------------------------
    def _accept(self, server: socket.socket) -> socket.socket | None:
        server.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = server.accept()
                server.close()
                conn.settimeout(0.5)
                return conn
            except socket.timeout:
                continue
        server.close()
        return None

    def release(self, count: int) -> None:
        """Let the camera serve images up to ``count`` in total (a test pauses the firmware this way)."""
        self.images_allowed = min(count, len(self.images))
        self._camera_wake.set()

    def _camera(self, server: socket.socket) -> None:
        conn = self._accept(server)
        requests = 0
        while conn is not None and not self._stop.is_set():
            while requests and self.images_served < self.images_allowed:
                conn.sendall(self.images[self.images_served].tobytes())
                self.images_served += 1
                requests -= 1
            try:
                data = conn.recv(64)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            # The firmware asks again when an image does not come within 10 s; one pending request
            # is all it waits for.
            requests = min(1, requests + data.count(CAMERA_REQUEST))

    def _log(self, server: socket.socket) -> None:
        conn = self._accept(server)
        pending = b""
        while conn is not None and not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("ascii", "replace").strip()
                self.log_lines.append(line)
                parsed = parse_log_line(line)
                if parsed is not None:
                    self._results.put(parsed)

    def results(self, count: int, timeout_s: float = 120.0):
        """Yield the next ``count`` per-image results; QemuError when one takes longer than timeout_s."""
        for _ in range(count):
            try:
                yield self._results.get(timeout=timeout_s)
            except queue.Empty:
                alive = self.proc is not None and self.proc.poll() is None
                raise QemuError(f"no result from the firmware within {timeout_s:.0f} s (qemu "
                                f"{'running' if alive else 'exited'}); its log:\n" + "\n".join(self.log_lines[-20:]))
