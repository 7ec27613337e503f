"""The agent's side of the serial protocol: answer every frame from the MCU with exactly one frame.

IMAGE -> PREDICTION (or ERROR), HELLO -> HELLO_REPLY, anything unreadable -> ERROR. A repeated IMAGE
(same seq and bytes as the last one, i.e. the MCU retransmitting after an error or timeout) gets the
same PREDICTION again without a second inference.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .agent import Agent, InferenceResult
from .framing import MAX_PAYLOAD, SEQ_NONE, ErrorCode, Frame, FrameError, MsgType
from .messages import FLAG_WANT_LOGITS, PREDICTION_FIXED, ErrorMsg, Hello, HelloReply, Image, Prediction, Reason
from .serial_link import SerialLink

log = logging.getLogger("agilenn.agent.serial")


class SerialBridge:
    def __init__(self, link: SerialLink, agent: Agent,
                 on_result: Callable[[int, InferenceResult], None] | None = None):
        self.link = link
        self.agent = agent
        self.on_result = on_result
        self.want_logits = False
        self.max_rx = 0  # the MCU's receive limit from HELLO; 0: none given
        self._last_image: tuple[int, bytes] | None = None
        self._last_reply: Frame | None = None
        self.counts = {"images": 0, "retransmissions": 0, "errors": 0, "hellos": 0}

    def serve(self, stop: threading.Event | None = None, limit: int | None = None) -> None:
        """Answer frames until stop is set or ``limit`` images have been answered."""
        stop = stop or threading.Event()
        while not stop.is_set() and (limit is None or self.counts["images"] < limit):
            event = self.link.receive(timeout=0.2)
            if event is not None:
                self.link.send(self.answer(event))

    def answer(self, event) -> Frame:
        if isinstance(event, FrameError):
            return self._error(event.seq, event.code, str(event))
        try:
            if event.type == MsgType.HELLO:
                return self._hello(event)
            if event.type == MsgType.IMAGE:
                return self._image(event)
            return self._error(event.seq, ErrorCode.UNKNOWN_TYPE, f"the agent does not take {event.type_name} frames")
        except FrameError as exc:
            return self._error(event.seq, exc.code, str(exc))
        except Exception as exc:  # one bad input must not take the link down
            log.exception("frame seq %d failed", event.seq)
            return self._error(event.seq, ErrorCode.INTERNAL, f"{exc.__class__.__name__}: {exc}")

    def _error(self, seq: int, code: int, detail: str) -> Frame:
        self.counts["errors"] += 1
        log.info("ERROR to seq %s: %s %s", "?" if seq == SEQ_NONE else seq, ErrorCode.NAMES.get(code, code), detail)
        return Frame(MsgType.ERROR, seq, ErrorMsg(code, detail).pack())

    def _hello(self, frame: Frame) -> Frame:
        hello = Hello.parse(frame.payload)
        self.counts["hellos"] += 1
        self.want_logits = bool(hello.flags & FLAG_WANT_LOGITS)
        self.max_rx = hello.max_rx
        b = self.agent.bundle
        c, h, w = b.input_shape
        reply = HelloReply(c, h, w, b.num_classes, MAX_PAYLOAD, f"{b.name}:{b.version}",
                           self.agent.connection_state == "ready")
        return Frame(MsgType.HELLO_REPLY, frame.seq, reply.pack())

    def _image(self, frame: Frame) -> Frame:
        key = (frame.seq, bytes(frame.payload))
        if self._last_image == key and self._last_reply is not None:
            self.counts["retransmissions"] += 1
            return self._last_reply
        image = Image.parse(frame.payload).pixels
        c, h, w = self.agent.bundle.input_shape
        if image.shape != (h, w, c):
            raise FrameError(ErrorCode.BAD_MESSAGE, f"image is {list(image.shape)} (HWC), the model takes {[h, w, c]}")
        result = self.agent.infer(image)
        logits = result.merged_logits.tolist() if self.want_logits else []
        if self.max_rx and PREDICTION_FIXED + 4 * len(logits) > self.max_rx:
            logits = []  # what the MCU cannot hold it does not get
        reply = Frame(MsgType.PREDICTION, frame.seq, Prediction(
            label=result.prediction,
            degraded=result.degraded,
            reason=Reason.CODES[result.reason],
            channels_sent=result.channels_sent,
            channels_total=result.channels_total,
            payload_bytes=result.payload_bytes,
            latency_us=int(result.timings.latency_ms * 1e3),
            logits=logits,
        ).pack())
        self._last_image, self._last_reply = key, reply
        self.counts["images"] += 1
        if self.on_result is not None:
            self.on_result(frame.seq, result)
        return reply
