"""The device agent as a library: one uint8 image in, one InferenceResult out, always.

    with Agent(bundle, "127.0.0.1:50051", deadline_ms=500) as agent:
        result = agent.infer(image)          # image: uint8 [H, W, C] (or [H, W])
        result.prediction, result.degraded, result.timings.latency_ms

Per image: device part (extractor + local predictor) -> quantize the remote channels -> entropy-code
them within the byte budget -> send on the stream -> merge alpha*local + (1-alpha)*remote, with the
bundle's alpha for the number of channels sent (Bundle.alpha_for). When the budget admits fewer
channels than the bundle's break-even (Bundle.min_channels) nothing is sent: those channels would
make the answer worse than the local predictor's. When no remote logits come back in time, or none
were asked for, the local logits alone answer and the result says why (degraded, reason).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agilenn.firmware.cost import bundle_device_cost
from agilenn.models import Bundle, load_bundle

from .client import ClientSecurity, RemoteClient, RemoteReply
from .device_model import DevicePart
from .mcu import Mcu, measured_instructions, parse_mcu
from .messages import Reason

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_DEADLINE_MS = 1000.0


@dataclass
class Timings:
    """Milliseconds. latency_ms = device_compute_ms + encode_ms + max(network_ms, device_local_ms)
    + merge_ms, except that encode_ms is left out when coding_in_device: the device figure is then
    the firmware's measured run, which computes the centroid indices and codes the payload itself, so
    the host's encode is the same step done a second time (reported, not charged).

    device_local_ms is the local predictor when the device runs it after the payload has gone out
    (the firmware does, serial protocol version 3): it overlaps the request's time on the link and
    at the server, and adds to the latency only where it outlasts them. device_compute_ms is then
    the part up to the payload; otherwise it is the whole device part and device_local_ms 0."""

    host_compute_ms: float = 0.0  # device part measured on this host
    mcu_compute_ms: float | None = None  # device part estimated on the emulated MCU (--mcu)
    device_compute_ms: float = 0.0  # the MCU estimate when emulating, else host_compute_ms
    encode_ms: float = 0.0  # quantize + entropy-code (+ bisection under a byte budget), on this host
    network_ms: float = 0.0  # request sent -> reply (or deadline); 0 when nothing was sent
    server_queue_ms: float | None = None  # from the reply's ServerTimings
    server_decode_ms: float | None = None
    server_compute_ms: float | None = None
    server_total_ms: float | None = None
    server_batch_size: int | None = None
    merge_ms: float = 0.0
    latency_ms: float = 0.0
    coding_in_device: bool = False  # device_compute_ms already covers quantizing and coding the payload
    device_local_ms: float = 0.0  # the local predictor, run while the request is out (see above)

    def charged_encode_ms(self) -> float:
        return 0.0 if self.coding_in_device else self.encode_ms


@dataclass
class InferenceResult:
    prediction: int
    merged_logits: np.ndarray  # the answer's logits (the local ones when degraded)
    local_logits: np.ndarray
    remote_logits: np.ndarray | None
    degraded: bool
    reason: str  # Reason.NAMES: "none" for a full answer
    detail: str  # human-readable why, for degraded answers
    channels_sent: int  # remote channels in the payload (after the byte budget)
    channels_total: int
    payload_bytes: int  # 0 when nothing was sent
    timings: Timings = field(default_factory=Timings)

    @property
    def local_prediction(self) -> int:
        return int(np.argmax(self.local_logits))

    def to_dict(self, logits: bool = False) -> dict:
        d = {
            "prediction": self.prediction,
            "local_prediction": self.local_prediction,
            "degraded": self.degraded,
            "reason": self.reason,
            "channels_sent": self.channels_sent,
            "channels_total": self.channels_total,
            "payload_bytes": self.payload_bytes,
            "latency_ms": round(self.timings.latency_ms, 3),
            "timings": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self.timings).items()},
        }
        if self.detail:
            d["detail"] = self.detail
        if logits:
            d["merged_logits"] = [round(float(x), 5) for x in self.merged_logits]
        return d


@dataclass
class FeaturesInFlight:
    """A device's payload that Agent.send_features() forwarded (or answered at once: reply set)."""

    payload: bytes  # as forwarded (the agent's header version)
    channels_sent: int
    timings: Timings
    flight: object | None  # RemoteClient.send()'s handle; None when nothing went out
    reply: RemoteReply | None = None  # the answer when nothing went out (no server, below break-even)


class Agent:
    """Runs the device part locally and the rest on the server at ``server_address``.

    server_address=None runs local-only (every answer degraded, reason "no_server").
    deadline_ms bounds the wait for the remote logits; max_payload_bytes drops trailing remote
    channels until the payload fits; mcu ("stm32f746@216MHz") models the device part's compute time.
    numerics: "auto" (default: the bundle's integer device part when it has one, else device.onnx),
    "int8" or "float".
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        server_address: str | None = DEFAULT_SERVER,
        *,
        deadline_ms: float | None = DEFAULT_DEADLINE_MS,
        max_payload_bytes: int | None = None,
        mcu: Mcu | str | None = None,
        coder: str | None = None,
        security: ClientSecurity | None = None,
        connect_timeout_s: float = 2.0,
        backoff_max_s: float = 2.0,
        numerics: str = "auto",
        server_timings: bool = False,  # ask the server for ServerTimings in every reply (~15 B each)
        logits_encoding: str = "int16",  # how remote logits travel (docs/protocol.md, "Lean streams")
        payload_version: int = 2,  # 1: the 13-byte header, for a server from before 2026-11-27
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.device = DevicePart(self.bundle, numerics)
        self.codec = self.bundle.codec(payload_version)
        self.coder = coder
        self.deadline_s = None if deadline_ms is None or deadline_ms <= 0 else deadline_ms / 1e3
        self.max_payload_bytes = max_payload_bytes
        self.mcu = parse_mcu(mcu) if isinstance(mcu, str) else mcu
        self.device_macs = bundle_device_cost(self.bundle)["macs"]
        # the firmware's measured instruction count when there is one (agilenn-firmware run --record),
        # and the part of it before the payload goes out (None for a measurement without the split)
        self.device_instructions = measured_instructions(self.bundle)
        self.device_instructions_to_payload = measured_instructions(self.bundle, to_payload=True)
        self.server_address = server_address
        self.client = None
        if server_address:
            self.client = RemoteClient(server_address, self.bundle.manifest, security,
                                       connect_timeout_s=connect_timeout_s, backoff_max_s=backoff_max_s,
                                       server_timings=server_timings, logits_encoding=logits_encoding)

    # --- lifecycle ----------------------------------------------------------------------------
    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.client is not None and self.client.wait_connected(timeout)

    @property
    def connection_state(self) -> str:
        return "local-only" if self.client is None else self.client.state

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def local_logit_scale(self) -> float | None:
        """Scale (as float32) of the integer local predictor's int16 logits; None without an integer device part."""
        if not hasattr(self, "_logit_scale"):
            from .int8_device import load_int8_device

            int8 = load_int8_device(self.bundle)
            self._logit_scale = None if int8 is None else float(np.float32(int8.logit_scale))
        return self._logit_scale

    # --- inference ------------------------------------------------------------------------------
    def infer(self, image: np.ndarray) -> InferenceResult:
        t = Timings()
        out = self.device.run(image)
        t.host_compute_ms = out.compute_ms
        if self.mcu is not None:
            t.mcu_compute_ms = self.mcu.compute_ms(self.device_macs, self.device_instructions)
            t.coding_in_device = self.device_instructions is not None
        t.device_compute_ms = t.mcu_compute_ms if t.mcu_compute_ms is not None else t.host_compute_ms
        if self.mcu is not None and self.device_instructions_to_payload is not None:
            # the firmware sends the payload before its local predictor runs (serial protocol version 3)
            t.device_compute_ms = self.mcu.compute_ms(self.device_macs, self.device_instructions_to_payload)
            t.device_local_ms = t.mcu_compute_ms - t.device_compute_ms

        payload, sent = b"", 0
        if self.client is None:
            reply = RemoteReply(reason=Reason.NO_SERVER, detail="agent runs without a server")
        elif not self.client.wait_ready(self.deadline_s):
            # Skip the encoding work nobody would receive; the answer says why.
            reply = self.client.infer(b"", self.deadline_s)
        else:
            start = time.perf_counter()
            indices = out.indices(self.codec)
            payload, sent = self.codec.encode_within(indices, self.max_payload_bytes, self.coder)
            t.encode_ms = (time.perf_counter() - start) * 1e3
            reply = self._below_break_even(sent) or self.client.infer(payload, self.deadline_s)
        return self._merge(out.local_logits, reply, payload, sent, t)

    def _below_break_even(self, sent: int) -> RemoteReply | None:
        """A local-only reply (nothing sent) when ``sent`` channels are worth less than none, else None."""
        if sent >= self.bundle.min_channels:
            return None
        budget = "" if self.max_payload_bytes is None else f"the {self.max_payload_bytes}-byte budget admits "
        return RemoteReply(reason=Reason.BUDGET,
                           detail=f"{budget}{sent} of {self.codec.shape[0]} remote channels, fewer than the "
                                  f"break-even {self.bundle.min_channels}: answered locally, nothing sent")

    def infer_features(self, local_logits: np.ndarray, payload: bytes, device_ms: float = 0.0) -> InferenceResult:
        """The remote half for a device that ran the device part itself (serial FEATURES).

        ``payload`` (a feature payload of docs/protocol.md) goes to the server as it is; the answer
        merges it with ``local_logits`` exactly as infer() does, and falls back to them alone when no
        remote logits come back. The payload's header is checked against the model first, so a
        payload for another model is refused here rather than costing a round trip.
        """
        return self.finish_features(self.send_features(payload, device_ms), local_logits)

    def send_features(self, payload: bytes, device_ms: float = 0.0) -> "FeaturesInFlight":
        """infer_features() in two halves: send the payload now, merge with the local logits when
        they come (finish_features). For a device that sends its payload before its local predictor
        runs (serial protocol version 3). Raises PayloadError for a payload that is not the model's."""
        header = self.codec.read_header(payload)  # PayloadError names what is wrong, another model included
        payload = self.codec.reheader(payload, header)  # the header version this agent speaks (--payload-version)
        t = Timings(device_compute_ms=device_ms, coding_in_device=True)  # the MCU coded the payload
        if self.client is None:
            reply = RemoteReply(reason=Reason.NO_SERVER, detail="agent runs without a server")
        else:
            # The MCU coded under its own budget; below break-even its payload is not worth forwarding.
            reply = self._below_break_even(header.channels_sent)
        flight = None if reply is not None else self.client.send(payload, self.deadline_s)
        return FeaturesInFlight(payload, header.channels_sent, t, flight, reply)

    def finish_features(self, sent: "FeaturesInFlight", local_logits: np.ndarray,
                        local_ms: float = 0.0) -> InferenceResult:
        """The answer to a send_features(): waits for the remote logits (at most the deadline, counted
        from the send) and merges. ``local_ms``: what the local predictor cost the device after the
        send (Timings.device_local_ms)."""
        reply = sent.reply if sent.flight is None else self.client.wait(sent.flight)
        sent.timings.device_local_ms = local_ms
        return self._merge(np.asarray(local_logits, np.float32), reply, sent.payload, sent.channels_sent, sent.timings)

    def _merge(self, local_logits: np.ndarray, reply: RemoteReply, payload: bytes, sent: int,
               t: Timings) -> InferenceResult:
        t.network_ms = reply.network_ms if reply.sent else 0.0
        if reply.timings:
            t.server_queue_ms = reply.timings["queue_ms"]
            t.server_decode_ms = reply.timings["decode_ms"]
            t.server_compute_ms = reply.timings["compute_ms"]
            t.server_total_ms = reply.timings["total_ms"]
            t.server_batch_size = reply.timings["batch_size"]

        start = time.perf_counter()
        degraded = reply.logits is None
        merged = local_logits if degraded else self.bundle.merge(local_logits, reply.logits, sent)
        prediction = int(np.argmax(merged))
        t.merge_ms = (time.perf_counter() - start) * 1e3
        t.latency_ms = t.device_compute_ms + t.charged_encode_ms() + max(t.network_ms, t.device_local_ms) + t.merge_ms
        return InferenceResult(
            prediction=prediction,
            merged_logits=np.asarray(merged, np.float32),
            local_logits=local_logits,
            remote_logits=reply.logits,
            degraded=degraded,
            reason=Reason.NAMES[reply.reason],
            detail=reply.detail,
            channels_sent=sent if reply.sent else 0,
            channels_total=self.codec.shape[0],
            payload_bytes=len(payload) if reply.sent else 0,
            timings=t,
        )
