"""The schemes a latency run compares, each a client that turns one image into one Measured result.

- agilenn-*, plain-split: the real device agent (agilenn.device_agent.agent.Agent) on its
  long-lived InferStream, with a coder and optionally a byte budget (truncated channels).
- edge-*: the image itself, PNG or JPEG, on the same kind of stream, answered by the bundle's
  reference NN on the server (the paper's edge-only baseline).
- local-only: the agent without a server: the device part's local predictor alone.

Device compute on the MCU is not measured here: the run adds the cost model's estimate per clock
(agilenn.benchmarks.mcu_cost), so one network pass serves every clock.
"""

from __future__ import annotations

import io
import itertools
import queue
import time
from dataclasses import dataclass

import grpc
import numpy as np

from agilenn.device_agent.agent import Agent
from agilenn.device_agent.client import CHANNEL_OPTIONS, DEFAULT_LOGITS_ENCODING
from agilenn.server.logits import ENCODINGS, decode_logits
from agilenn.models import Bundle
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc

DEADLINE_MS = 30_000  # a benchmark waits: a late answer is a latency sample, not a degraded one


@dataclass
class Measured:
    prediction: int
    degraded: bool
    payload_bytes: int
    channels_sent: int
    host_device_ms: float  # the device part on this host (informational: the MCU estimate is used)
    encode_ms: float
    network_ms: float  # request sent -> reply, as the client saw it
    server_queue_ms: float
    server_decode_ms: float
    server_compute_ms: float
    server_total_ms: float
    merge_ms: float
    has_server_timings: bool = False  # the reply carried ServerTimings (only on request)


@dataclass(frozen=True)
class Scheme:
    name: str
    kind: str  # "agent" | "edge" | "local"
    bundle: Bundle
    coder: str | None = None
    image_format: str | None = None  # edge: "png" or "jpeg"
    jpeg_quality: int | None = None
    budget_bytes: int | None = None

    @property
    def uses_link(self) -> bool:
        return self.kind != "local"

    @property
    def runs_device_part(self) -> bool:
        return self.kind != "edge"

    def client(self, address: str | None, server_timings: bool = False):
        """server_timings: ask for ServerTimings in every reply (~15 B each; the run asks only on
        its calibration pass, so the measured pass carries what a deployed device's would)."""
        if self.kind == "edge":
            return ImageClient(address, self.bundle, self.image_format, self.jpeg_quality, server_timings)
        return AgentClient(self.bundle, address if self.kind == "agent" else None, self.coder, self.budget_bytes,
                           server_timings)


class AgentClient:
    def __init__(self, bundle: Bundle, address: str | None, coder: str | None, budget_bytes: int | None,
                 server_timings: bool = False):
        self.agent = Agent(bundle, address, deadline_ms=DEADLINE_MS, coder=coder, max_payload_bytes=budget_bytes,
                           server_timings=server_timings)
        if address and not self.agent.wait_connected(timeout=30):
            state = self.agent.client.state_detail
            self.agent.close()
            raise RuntimeError(f"agent could not connect to {address}: {state}")

    def infer(self, image: np.ndarray) -> Measured:
        r = self.agent.infer(image)
        t = r.timings
        return Measured(r.prediction, r.degraded and self.agent.client is not None, r.payload_bytes, r.channels_sent,
                        t.host_compute_ms, t.encode_ms, t.network_ms, t.server_queue_ms or 0.0,
                        t.server_decode_ms or 0.0, t.server_compute_ms or 0.0, t.server_total_ms or 0.0, t.merge_ms,
                        self.agent.client is not None and t.server_total_ms is not None)

    def close(self) -> None:
        self.agent.close()


def encode_image(image: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """uint8 HWC -> PNG (smallest zlib setting Pillow offers) or JPEG at `quality`."""
    from PIL import Image

    pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    elif fmt == "jpeg":
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality or 75)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


class ImageClient:
    """Edge-only baseline: one lean InferStream (the agent's stream options and channel settings,
    so both pay the same transport), one image request in flight at a time (like the agent)."""

    def __init__(self, address: str, bundle: Bundle, fmt: str, quality: int | None, server_timings: bool = False):
        self.fmt, self.quality = fmt, quality
        self.model = pb.ModelRef(name=bundle.name, version=bundle.version)
        self.options = pb.StreamOptions(timings=server_timings, logits_encoding=ENCODINGS[DEFAULT_LOGITS_ENCODING])
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.replies = pb_grpc.InferenceStub(self.channel).InferStream(iter(self.requests.get, None))
        self.ids = itertools.count(1)

    def infer(self, image: np.ndarray) -> Measured:
        start = time.perf_counter()
        data = encode_image(image, self.fmt, self.quality)
        sent = time.perf_counter()
        # no request_id: replies come in request order (as in the agent's client)
        request = pb.InferRequest(image=pb.EncodedImage(format=self.fmt, data=data))
        if next(self.ids) == 1:  # the stream's defaults, once
            request.model.CopyFrom(self.model)
            request.timeout_ms = DEADLINE_MS
            request.stream_options.CopyFrom(self.options)
        self.requests.put(request)
        reply = next(self.replies)
        done = time.perf_counter()
        if reply.WhichOneof("result") != "logits":
            raise RuntimeError(f"server refused the {self.fmt} image: {pb.ErrorCode.Name(reply.error.code)}: "
                               f"{reply.error.message}")
        prediction = int(np.argmax(decode_logits(reply.logits)))
        t = reply.timings
        return Measured(prediction, False, len(data), 0, 0.0, (sent - start) * 1e3, (done - sent) * 1e3,
                        t.queue_us / 1e3, t.decode_us / 1e3, t.compute_us / 1e3, t.total_us / 1e3,
                        (time.perf_counter() - done) * 1e3, reply.HasField("timings"))

    def close(self) -> None:
        self.requests.put(None)
        self.replies.cancel()
        self.channel.close()


def build_schemes(agilenn: Bundle, plain: Bundle | None, budget_bytes: int | None, names=None) -> list[Scheme]:
    """All schemes in run order. agilenn-ctx is AgileNN as shipped (the bundle's context-adaptive
    coder, when it has its tables); agilenn-budget's automatic byte budget is derived from agilenn-ans."""
    schemes = [
        Scheme("agilenn-ctx", "agent", agilenn, coder="rans-ctx"),
        Scheme("agilenn-ans", "agent", agilenn, coder="ans"),
        Scheme("agilenn-zstd", "agent", agilenn, coder="zstd"),
        Scheme("agilenn-budget", "agent", agilenn, coder="ans", budget_bytes=budget_bytes),
        Scheme("edge-png", "edge", agilenn, image_format="png"),
        Scheme("edge-jpeg90", "edge", agilenn, image_format="jpeg", jpeg_quality=90),
        Scheme("edge-jpeg75", "edge", agilenn, image_format="jpeg", jpeg_quality=75),
        Scheme("local-only", "local", agilenn),
    ]
    if plain is not None:
        schemes.insert(3, Scheme("plain-split", "agent", plain, coder="ans"))
    if "rans-ctx" not in agilenn.codec().available_coders:
        schemes = [s for s in schemes if s.coder != "rans-ctx"]
    if not agilenn.has("reference"):
        schemes = [s for s in schemes if s.kind != "edge"]
    if names:
        unknown = set(names) - {s.name for s in schemes}
        if unknown:
            raise ValueError(f"unknown or unavailable schemes: {', '.join(sorted(unknown))} "
                             f"(available: {', '.join(s.name for s in schemes)})")
        schemes = [s for s in schemes if s.name in names]
    return schemes
