"""agilenn-mcu-sim: plays the MCU end of the serial protocol, for demos and tests.

It sends HELLO, then one IMAGE per dataset image (or, with --features, one FEATURES frame: it runs
the device part itself, as a firmware with the generated C library does; with --local-follows as well,
protocol version 3's FEATURES with the logits to follow and then a LOCAL frame), stop-and-wait, exactly as
docs/serial-protocol.md tells a firmware to: wait for the answer with the same seq; on an ERROR with
seq 0xFFFF (some chunk was unreadable, maybe ours) keep reading briefly for our own answer, then send
the same frame again; on a timeout, send it again too. It can inject line noise between frames and
corrupt frames, and checks that every image ends up with exactly one answer.

    agilenn-mcu-sim --port /dev/ttyUSB0 --dataset fashion-mnist --limit 200 --noise 0.3
    agilenn-mcu-sim --pty ...     # make a pty pair and print the path to give agilenn-agent --port
    agilenn-mcu-sim --pty --features --bundle DIR   # an MCU that runs the device part (FEATURES)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .framing import SEQ_NONE, ErrorCode, Frame, FrameError, MsgType, pack_frame
from .messages import FLAG_WANT_LOGITS, ErrorMsg, Features, Hello, HelloReply, Image, Local, Prediction
from .serial_link import SerialLink


@dataclass
class SimReport:
    sent: int = 0  # images
    answered: int = 0  # images with exactly one accepted answer (prediction or error)
    predictions: int = 0
    error_answers: int = 0  # images answered with an ERROR naming their seq
    correct: int = 0
    labelled: int = 0
    degraded: int = 0
    unreadable_errors: int = 0  # ERRORs with seq 0xFFFF (noise, corrupt frames)
    retransmissions: int = 0
    timeouts: int = 0
    duplicates: int = 0  # answers for an seq already answered (after a retransmission)
    unanswered: int = 0
    noise_chunks: int = 0
    corrupted_frames: int = 0
    model: str = ""
    request: str = "IMAGE"  # what the simulated MCU sends: IMAGE, or FEATURES (it runs the device part)
    answers: list = field(default_factory=list)  # per image: predicted class, or -1 for an error answer
    reasons: list = field(default_factory=list)  # per image: the PREDICTION's reason code (None for no prediction)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def ok(self) -> bool:
        return self.answered == self.sent and self.unanswered == 0

    def as_dict(self, answers: bool = False) -> dict:
        d = asdict(self)
        if not answers:
            d.pop("answers")
            d.pop("reasons")
        d["accuracy"] = self.accuracy
        d["ok"] = self.ok
        return d


class FeaturesMaker:
    """What a firmware running the device part puts in FEATURES, computed in Python.

    The bundle's integer device part when it has one (bit-exact with the generated C library);
    otherwise the float ONNX device part with its logits rounded to int16 steps of 2^-8 (for
    bundles without an integer part: tests of the message itself).
    """

    FLOAT_LOGIT_SCALE = 2.0 ** -8

    def __init__(self, bundle, coder: str | None = None):
        from .int8_device import load_int8_device

        self.bundle = bundle
        self.codec = bundle.codec()
        self.coder = coder
        self.int8 = load_int8_device(bundle)
        if self.int8 is None:
            from .device_model import DevicePart

            self.float_part = DevicePart(bundle)

    def __call__(self, image: np.ndarray) -> Features:
        if self.int8 is not None:
            out = self.int8.run(np.asarray(image)[None])
            payload = self.codec.encode_indices(out.indices[0], self.coder)
            return Features(out.logits[0], float(self.int8.logit_scale), payload)
        out = self.float_part.run(image)
        q = np.clip(np.round(out.local_logits / self.FLOAT_LOGIT_SCALE), -32768, 32767).astype(np.int16)
        payload = self.codec.encode(out.remote_features, self.coder)
        return Features(q, self.FLOAT_LOGIT_SCALE, payload)


class McuSim:
    def __init__(self, link: SerialLink, *, noise: float = 0.0, noise_max_bytes: int = 48, corrupt: float = 0.0,
                 timeout_s: float = 10.0, max_tries: int = 8, seed: int = 0, want_logits: bool = False,
                 grace_s: float = 0.5, features: FeaturesMaker | None = None, local_follows: bool = False):
        self.link = link
        self.noise, self.noise_max_bytes, self.corrupt = noise, noise_max_bytes, corrupt
        self.timeout_s, self.max_tries = timeout_s, max_tries
        # After an ERROR with seq 0xFFFF, how long to keep reading for our own answer before resending
        # (the error may be for noise in front of our frame; the agent answers in order).
        self.grace_s = grace_s
        self.features = features
        self.local_follows = local_follows  # version 3: FEATURES with the logits to follow, then LOCAL
        self.rng = np.random.default_rng(seed)
        self.want_logits = want_logits
        self.report = SimReport(request="IMAGE" if features is None else "FEATURES")
        self.hello: HelloReply | None = None

    def _noise(self) -> None:
        if self.noise and self.rng.random() < self.noise:
            junk = self.rng.integers(0, 256, size=int(self.rng.integers(1, self.noise_max_bytes + 1)), dtype=np.uint8)
            self.link.send_raw(junk.tobytes())
            self.report.noise_chunks += 1

    def _send(self, frame: Frame) -> None:
        wire = bytearray(pack_frame(frame))
        if self.corrupt and self.rng.random() < self.corrupt:
            # Flip one bit strictly inside the frame, leaving both delimiters.
            pos = int(self.rng.integers(1, len(wire) - 1))
            wire[pos] ^= 1 << int(self.rng.integers(0, 8))
            self.report.corrupted_frames += 1
        self._noise()
        self.link.send_raw(bytes(wire))

    def exchange(self, frame: Frame, expect: int, timeout_s: float | None = None, tries: int | None = None,
                 pre: Frame | None = None):
        """Send frame until an answer with its seq comes back; None after max_tries. ``pre`` (the
        FEATURES of a version-3 pair) goes out before the frame on every attempt, and an ERROR
        MISSING_FEATURES (the agent did not get it intact) means: send both again."""
        for attempt in range(tries or self.max_tries):
            if attempt:
                self.report.retransmissions += 1
            if pre is not None:
                self._send(pre)
            self._send(frame)
            end = time.monotonic() + (timeout_s or self.timeout_s)
            resend_at = None  # set by an unreadable-chunk error: the end of the grace period
            while True:
                until = end if resend_at is None else min(end, resend_at)
                event = self.link.receive(max(0.0, until - time.monotonic()))
                if event is None:
                    if resend_at is None or time.monotonic() >= end:
                        self.report.timeouts += 1
                    break  # resend
                if isinstance(event, FrameError):
                    continue  # a garbled answer: wait for the retransmission our own timeout triggers
                if event.seq == SEQ_NONE and event.type == MsgType.ERROR:
                    self.report.unreadable_errors += 1
                    # Maybe our frame was the unreadable one, maybe only noise before it: keep reading
                    # briefly for our own answer, then resend (the agent deduplicates).
                    if resend_at is None:
                        resend_at = time.monotonic() + self.grace_s
                    continue
                if event.seq != frame.seq:
                    self.report.duplicates += 1
                    continue
                if (pre is not None and event.type == MsgType.ERROR
                        and ErrorMsg.parse(event.payload).code == ErrorCode.MISSING_FEATURES):
                    break  # our FEATURES was damaged on the line: resend the pair
                if event.type in (expect, MsgType.ERROR):
                    return event
                self.report.duplicates += 1
        return None

    def handshake(self, wait_s: float = 10.0) -> HelloReply:
        """HELLO, repeated every second for up to wait_s (the agent may not have opened its port yet)."""
        flags = FLAG_WANT_LOGITS if self.want_logits else 0
        hello = Frame(MsgType.HELLO, 0, Hello(flags, 0, "agilenn-mcu-sim").pack())
        answer = self.exchange(hello, MsgType.HELLO_REPLY, timeout_s=1.0, tries=max(1, int(wait_s)))
        if answer is None or answer.type != MsgType.HELLO_REPLY:
            detail = ErrorMsg.parse(answer.payload).detail if answer is not None else "no answer"
            raise RuntimeError(f"HELLO failed: {detail}")
        self.hello = HelloReply.parse(answer.payload)
        self.report.model = self.hello.model
        return self.hello

    def run(self, images: np.ndarray, labels: np.ndarray | None = None) -> SimReport:
        if self.hello is None:
            self.handshake()
        r = self.report
        for i, image in enumerate(images):
            seq = i % SEQ_NONE  # 0xFFFF is reserved for "unknown seq"
            r.sent += 1
            pre = None
            if self.features is not None and self.local_follows:
                f = self.features(image)
                pre = Frame(MsgType.FEATURES, seq, Features(f.logits_q[:0], f.scale, f.payload, f.device_cycles,
                                                            logits_follow=True, classes=f.classes).pack(), 3)
                request = Frame(MsgType.LOCAL, seq, Local(f.logits_q).pack(), 3)
            elif self.features is not None:
                request = Frame(MsgType.FEATURES, seq, self.features(image).pack())
            else:
                request = Frame(MsgType.IMAGE, seq, Image(image).pack())
            answer = self.exchange(request, MsgType.PREDICTION, pre=pre)
            if answer is None:
                r.unanswered += 1
                r.answers.append(None)
                r.reasons.append(None)
                continue
            r.answered += 1
            if answer.type == MsgType.ERROR:
                err = ErrorMsg.parse(answer.payload)
                r.error_answers += 1
                r.answers.append(-1)
                r.reasons.append(None)
                print(f"mcu-sim: image {i}: ERROR {ErrorCode.NAMES.get(err.code, err.code)}: {err.detail}",
                      file=sys.stderr)
                continue
            pred = Prediction.parse(answer.payload)
            r.predictions += 1
            r.degraded += int(pred.degraded)
            r.answers.append(pred.label)
            r.reasons.append(pred.reason)
            if labels is not None:
                r.labelled += 1
                r.correct += int(pred.label == int(labels[i]))
        return r


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agilenn-mcu-sim", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device or pyserial URL the agent listens on")
    where.add_argument("--pty", action="store_true", help="create a pty pair; print the path for agilenn-agent --port")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", help="dataset folder (default: the dataset's standard place)")
    p.add_argument("--limit", type=int, default=100, help="images to send (default %(default)s)")
    p.add_argument("--noise", type=float, default=0.0, help="probability of junk bytes before each frame")
    p.add_argument("--corrupt", type=float, default=0.0, help="probability of a flipped bit inside a frame")
    p.add_argument("--timeout-s", type=float, default=10.0, help="wait per attempt before resending")
    p.add_argument("--features", action="store_true",
                   help="run the device part here and send FEATURES (protocol version 2) instead of IMAGE")
    p.add_argument("--local-follows", action="store_true",
                   help="with --features: protocol version 3, the payload first and the logits in a LOCAL frame")
    p.add_argument("--bundle", help="bundle whose device part --features runs (default: the shipped default model)")
    p.add_argument("--coder", help="coder for --features payloads (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from agilenn.training.datasets import load_dataset

    data = load_dataset(args.dataset, args.split, args.data_dir)
    images, labels = data.images[: args.limit], data.labels[: args.limit]
    if args.pty:
        from .serial_link import open_pty_pair

        port, path, _slave_fd = open_pty_pair()  # keep the slave open so the pty survives until the agent opens it
        print(f"agilenn-mcu-sim: waiting on {path}: run  agilenn-agent --port {path}", file=sys.stderr, flush=True)
        wait = 300.0  # a human starts the agent
    else:
        from .serial_link import open_serial

        port, wait = open_serial(args.port, args.baud), 30.0
    features = None
    if args.features:
        from agilenn.models import DEFAULT_MODEL, ModelRepository, load_bundle

        bundle = load_bundle(args.bundle) if args.bundle else ModelRepository().resolve(DEFAULT_MODEL)
        features = FeaturesMaker(bundle, args.coder)
    sim = McuSim(SerialLink(port), noise=args.noise, corrupt=args.corrupt, timeout_s=args.timeout_s, seed=args.seed,
                 features=features, local_follows=args.local_follows)
    sim.handshake(wait)
    report = sim.run(images, labels)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        acc = "n/a" if report.accuracy is None else f"{report.accuracy:.4f}"
        print(f"{report.answered}/{report.sent} answered, accuracy {acc}, {report.degraded} degraded, "
              f"{report.unreadable_errors} unreadable-frame errors, {report.retransmissions} retransmissions, "
              f"{report.unanswered} unanswered")
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
