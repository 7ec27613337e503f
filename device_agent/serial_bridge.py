"""The agent's side of the serial protocol: answer every frame from the MCU with exactly one frame.

IMAGE or FEATURES -> PREDICTION (or ERROR), HELLO -> HELLO_REPLY, anything unreadable -> ERROR. A
repeated IMAGE or FEATURES (same seq and bytes as the last one, i.e. the MCU retransmitting after an
error or timeout) gets the same PREDICTION again without a second inference. Every answer carries
the protocol version of the frame it answers, so a version-1 MCU never sees a version-2 frame.

Version 3: a FEATURES whose logits follow (format 0) and the LOCAL frame with its seq are one
request. The FEATURES is forwarded at once and gets no answer of its own (unless it is refused: an
ERROR at once); the LOCAL gets the PREDICTION. A repeated FEATURES of the request in flight, or of
the last one answered, starts nothing; a repeated LOCAL of the last one gets its PREDICTION again.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .agent import Agent, InferenceResult
from .framing import MAX_PAYLOAD, SEQ_NONE, SUPPORTED_VERSIONS, ErrorCode, Frame, FrameError, MsgType
from .messages import (FLAG_WANT_LOGITS, LOGITS_FOLLOW, PREDICTION_FIXED, ErrorMsg, Features, Hello, HelloReply, Image,
                       Local, Prediction, Reason, dequantize_logits)
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
        self._last_request: tuple[int, int, bytes] | None = None
        self._last_reply: Frame | None = None
        # version 3: the FEATURES waiting for its LOCAL (its key, the parsed frame, the agent's handle),
        # and the key of the FEATURES the last PREDICTION completed
        self._waiting: tuple[tuple[int, int, bytes], Features, object] | None = None
        self._last_opening: tuple[int, int, bytes] | None = None
        self.counts = {"images": 0, "features": 0, "retransmissions": 0, "errors": 0, "hellos": 0}
        self.device_cycles: list[int] = []  # what each FEATURES frame says the device part cost on the MCU

    @property
    def answered(self) -> int:
        """IMAGE and FEATURES frames answered with a PREDICTION (not counting retransmissions)."""
        return self.counts["images"] + self.counts["features"]

    def serve(self, stop: threading.Event | None = None, limit: int | None = None) -> None:
        """Answer frames until stop is set or ``limit`` images (IMAGE or FEATURES) have been answered."""
        stop = stop or threading.Event()
        while not stop.is_set() and (limit is None or self.answered < limit):
            event = self.link.receive(timeout=0.2)
            if event is not None:
                reply = self.answer(event)
                if reply is not None:
                    self.link.send(reply)

    def answer(self, event) -> Frame | None:
        """The answer frame; None only for a version-3 FEATURES whose LOCAL will be answered."""
        if isinstance(event, FrameError):
            # A frame that failed its CRC has no version worth trusting: answer in the one we speak.
            return self._error(event.seq, event.code, str(event))
        try:
            if event.seq == SEQ_NONE:
                raise FrameError(ErrorCode.BAD_MESSAGE, "seq 0xFFFF is reserved for answers whose seq is unknown")
            if event.type == MsgType.HELLO:
                return self._hello(event)
            if event.type == MsgType.IMAGE:
                return self._predict(event)
            if event.type == MsgType.FEATURES and event.version >= 3 and event.payload[:1] == bytes([LOGITS_FOLLOW]):
                return self._open(event)  # format 0: the logits follow in a LOCAL frame
            if event.type == MsgType.FEATURES and event.version >= 2:
                return self._predict(event)
            if event.type == MsgType.LOCAL and event.version >= 3:
                return self._complete(event)
            return self._error(event.seq, ErrorCode.UNKNOWN_TYPE,
                               f"the agent does not take {event.type_name} frames in protocol version {event.version}",
                               event.version)
        except FrameError as exc:
            return self._error(event.seq, exc.code, str(exc), event.version)
        except Exception as exc:  # one bad input must not take the link down
            log.exception("frame seq %d failed", event.seq)
            return self._error(event.seq, ErrorCode.INTERNAL, f"{exc.__class__.__name__}: {exc}", event.version)

    def _error(self, seq: int, code: int, detail: str, version: int | None = None) -> Frame:
        """An ERROR frame; without a version (a frame whose own cannot be trusted) in the newest we speak."""
        version = SUPPORTED_VERSIONS[-1] if version is None else version
        self.counts["errors"] += 1
        log.info("ERROR to seq %s: %s %s", "?" if seq == SEQ_NONE else seq, ErrorCode.NAMES.get(code, code), detail)
        return Frame(MsgType.ERROR, seq, ErrorMsg(code, detail).pack(), version)

    def _hello(self, frame: Frame) -> Frame:
        hello = Hello.parse(frame.payload)
        if hello.version != frame.version:
            raise FrameError(ErrorCode.BAD_VERSION, f"HELLO asks for protocol version {hello.version} inside a "
                                                    f"version-{frame.version} frame; the two must agree")
        self.counts["hellos"] += 1
        self.want_logits = bool(hello.flags & FLAG_WANT_LOGITS)
        self.max_rx = hello.max_rx
        b = self.agent.bundle
        c, h, w = b.input_shape
        reply = HelloReply(c, h, w, b.num_classes, MAX_PAYLOAD, f"{b.name}:{b.version}",
                           self.agent.connection_state == "ready", frame.version)
        return Frame(MsgType.HELLO_REPLY, frame.seq, reply.pack(), frame.version)

    def _predict(self, frame: Frame) -> Frame:
        key = (frame.type, frame.seq, bytes(frame.payload))
        if self._last_request == key and self._last_reply is not None:
            self.counts["retransmissions"] += 1
            return self._last_reply
        if frame.type == MsgType.IMAGE:
            result = self._infer_image(frame)
            self.counts["images"] += 1
        else:
            result = self._infer_features(frame)
            self.counts["features"] += 1
        reply = self._prediction(frame, result)
        self._last_request, self._last_reply = key, reply
        return reply

    def _prediction(self, frame: Frame, result) -> Frame:
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
        ).pack(), frame.version)
        if self.on_result is not None:
            self.on_result(frame.seq, result)
        return reply

    def _infer_image(self, frame: Frame):
        image = Image.parse(frame.payload).pixels
        c, h, w = self.agent.bundle.input_shape
        if image.shape != (h, w, c):
            raise FrameError(ErrorCode.BAD_MESSAGE, f"image is {list(image.shape)} (HWC), the model takes {[h, w, c]}")
        return self.agent.infer(image)

    # --- version 3: FEATURES (logits to follow), then LOCAL ---------------------------------------
    def _open(self, frame: Frame) -> Frame | None:
        """Forward the payload now; the answer waits for the LOCAL frame with this seq."""
        from agilenn.codec import PayloadError

        key = (frame.type, frame.seq, bytes(frame.payload))
        if (self._waiting is not None and self._waiting[0] == key) or self._last_opening == key:
            self.counts["retransmissions"] += 1  # in flight already, or answered: its LOCAL gets the answer
            return None
        feats = Features.parse(frame.payload, frame.version)
        self._check_logits(feats.classes, feats.scale)
        try:
            flight = self.agent.send_features(feats.payload)
        except (PayloadError, ValueError) as exc:
            raise FrameError(ErrorCode.BAD_MESSAGE, f"FEATURES feature payload: {exc}") from None
        # A FEATURES of another seq while one waits: the MCU gave up on that one (it moved on), so
        # its request is dropped; a reply still coming for it answers nobody.
        self._waiting = (key, feats, flight)
        return None

    def _complete(self, frame: Frame) -> Frame:
        key = (frame.type, frame.seq, bytes(frame.payload))
        if self._last_request == key and self._last_reply is not None:
            self.counts["retransmissions"] += 1
            return self._last_reply
        if self._waiting is None or self._waiting[0][1] != frame.seq:
            raise FrameError(ErrorCode.MISSING_FEATURES, f"LOCAL seq {frame.seq} follows no FEATURES waiting for its "
                                                         "logits (lost or refused): send both again")
        opening, feats, flight = self._waiting
        local = Local.parse(frame.payload)
        if local.logits_q.size != feats.classes:
            raise FrameError(ErrorCode.BAD_MESSAGE, f"LOCAL carries {local.logits_q.size} logits, its FEATURES "
                                                    f"announced {feats.classes}")
        self._waiting = None
        result = self.agent.finish_features(flight, dequantize_logits(local.logits_q, feats.scale))
        self.counts["features"] += 1
        self.device_cycles.append(feats.device_cycles + local.device_cycles)
        reply = self._prediction(frame, result)
        self._last_request, self._last_reply, self._last_opening = key, reply, opening
        return reply

    def _check_logits(self, n: int, scale: float) -> None:
        classes = self.agent.bundle.num_classes
        if n != classes:
            raise FrameError(ErrorCode.BAD_MESSAGE, f"FEATURES carries {n} logits, the model has {classes}")
        expected = self.agent.local_logit_scale
        if expected is not None and scale != expected:
            raise FrameError(ErrorCode.BAD_MESSAGE, f"FEATURES logit scale {scale!r} differs from the model's "
                                                    f"{expected!r}: firmware built for another model?")

    def _infer_features(self, frame: Frame):
        from agilenn.codec import PayloadError

        feats = Features.parse(frame.payload, frame.version)
        self._check_logits(feats.classes, feats.scale)
        try:
            result = self.agent.infer_features(feats.local_logits(), feats.payload)
        except (PayloadError, ValueError) as exc:
            raise FrameError(ErrorCode.BAD_MESSAGE, f"FEATURES feature payload: {exc}") from None
        self.device_cycles.append(feats.device_cycles)
        return result
