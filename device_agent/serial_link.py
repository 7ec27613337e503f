"""A frame link over a byte port: a pyserial port, or one end of a pty pair (tests, the MCU simulator).

The link only moves frames; what they mean is serial_bridge.py's (agent side) and mcu_sim.py's
(MCU side) business.
"""

from __future__ import annotations

import os
import select
import time
import tty

from .framing import Frame, FrameError, FrameReader, pack_frame

READ_SLICE_S = 0.05  # how long one port read may block; bounds how late a stop request is noticed


class FdPort:
    """The pyserial subset SerialLink uses (read/write/close/timeout) over a raw file descriptor.

    For the master side of a pty, which is not a tty pyserial can open.
    """

    def __init__(self, fd: int, timeout: float = READ_SLICE_S):
        self.fd = fd
        self.timeout = timeout

    def read(self, size: int = 1) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, size)
        except OSError:  # EIO: the other end of the pty is closed; look like an idle line
            time.sleep(self.timeout)
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_pty_pair() -> tuple[FdPort, str, int]:
    """A pty pair in raw mode: (master port, slave device path, slave fd).

    The slave path is what the other side opens as a serial port. Keep slave_fd open until the other
    side has opened the path; raw mode stops the line discipline from echoing or rewriting bytes.
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    return FdPort(master), os.ttyname(slave), slave


def open_serial(port: str, baud: int = 115200):
    """A pyserial port for a device path or a pyserial URL (socket://host:port, rfc2217://, loop://)."""
    import serial

    return serial.serial_for_url(port, baudrate=baud, timeout=READ_SLICE_S, write_timeout=10)


class SerialLink:
    def __init__(self, port):
        self.port = port
        self._reader = FrameReader()
        self._events: list = []

    def send(self, frame: Frame) -> None:
        self.send_raw(pack_frame(frame))

    def send_raw(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def receive(self, timeout: float | None) -> Frame | FrameError | None:
        """The next frame or FrameError, or None when timeout (seconds; None = forever) passes first."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            if end is not None and time.monotonic() >= end:
                return None
            waiting = getattr(self.port, "in_waiting", 0) or 1
            data = self.port.read(min(max(waiting, 1), 4096))
            if data:
                self._events.extend(self._reader.feed(data))
        return self._events.pop(0)

    def close(self) -> None:
        self.port.close()
