"""agilenn.v1.Inference: unary and streaming inference, manifest lookup, model listing.

A request goes through two halves: _start (synchronous: resolve the model, check limits, decode,
queue on the model's batcher) and _finish (await the batch, build the reply). Streams call _start
as each request arrives and _finish in arrival order, so replies never overtake each other while
requests of many streams share batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc

from agilenn.codec import PayloadError
from agilenn.models.model_repository import ModelNotFound
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc

from .batcher import Closed, Expired, QueueFull
from .errors import RequestError
from .inputs import decode_image
from .logits import encode_logits
from .metrics import Metrics, ModelMetrics
from .models import ServedModel, ServedModels
from .wire import MalformedMessage, RateLimitedLog, echoed_ref, model_ref_problem

log = logging.getLogger(__name__)

_END = object()  # the client closed its side of a stream
_DRAIN = object()  # the server is shutting down: flush and end the stream


@dataclass
class _Pending:
    request_id: int
    requested: pb.ModelRef
    arrival: float
    model: ServedModel | None = None
    metrics: ModelMetrics | None = None
    decode_s: float = 0.0
    channels: int = 0
    future: asyncio.Future | None = None
    error: RequestError | None = None
    lean: pb.StreamOptions | None = None  # a lean stream's reply options; None: a full v1 reply


def _us(seconds: float) -> int:
    return max(0, min(int(seconds * 1e6), 0xFFFFFFFF))


class StreamDefaults:
    """A lean stream's model and timeout, set by its first message (StreamOptions), inherited by
    every later message that leaves them unset. A v1 stream never adopts any: nothing changes for it."""

    def __init__(self):
        self.model: pb.ModelRef | None = None
        self.timeout_ms = 0

    def adopt(self, first: pb.InferRequest) -> pb.StreamOptions:
        self.model = pb.ModelRef()
        self.model.CopyFrom(first.model)
        self.timeout_ms = first.timeout_ms
        return first.stream_options

    def fill(self, req: pb.InferRequest) -> None:
        if self.model is None:
            return
        if not req.model.name and not req.model.version:
            req.model.CopyFrom(self.model)
        if not req.timeout_ms:
            req.timeout_ms = self.timeout_ms


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(self, models: ServedModels, metrics: Metrics, max_request_bytes: int = 1 << 20,
                 stream_window: int = 32):
        self.models = models
        self.max_request_bytes = max_request_bytes
        # How many requests one stream may have in flight; past it the server stops reading and
        # HTTP/2 flow control pushes back on the device instead of the queue filling up.
        self.stream_window = stream_window
        self.draining = False
        self._unknown = metrics.for_model("<unknown>", "")  # one label set for unknown names: bounded cardinality
        self._streams: set[asyncio.Queue] = set()
        self._active = 0  # inference RPCs in progress (unary calls and open streams)
        self._idle = asyncio.Event()
        self._idle.set()
        self._client_error_log = RateLimitedLog(log)

    # --- shutdown ---------------------------------------------------------------------------
    def drain(self) -> None:
        """Refuse new work; open streams flush what they already accepted, then end UNAVAILABLE."""
        self.draining = True
        for q in list(self._streams):
            q.put_nowait(_DRAIN)

    async def wait_idle(self) -> None:
        """Until no inference RPC is in progress (other RPCs, e.g. health watches, do not count)."""
        await self._idle.wait()

    def _enter(self) -> None:
        self._active += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    # --- the two halves of a request ----------------------------------------------------------
    def _malformed(self, req: MalformedMessage, arrival: float, where: str) -> _Pending:
        """A message that is not an InferRequest: answered like a bad payload, logged at most now and then."""
        self._client_error_log("%s: %s", where, req.describe())
        p = _Pending(0, pb.ModelRef(), arrival)
        p.error = RequestError(pb.INVALID_PAYLOAD, req.describe())
        return p

    def _start(self, req: pb.InferRequest, deadline: float | None, arrival: float) -> _Pending:
        p = _Pending(req.request_id, echoed_ref(req.model), arrival)
        try:
            if self.draining:
                raise RequestError(pb.UNAVAILABLE, "the server is shutting down")
            problem = model_ref_problem(req.model)
            if problem is not None:
                raise RequestError(pb.MODEL_NOT_FOUND, problem)
            try:
                p.model = self.models.resolve(req.model.name, req.model.version)
            except ModelNotFound as exc:
                raise RequestError(pb.MODEL_NOT_FOUND, str(exc)) from None
            p.metrics = p.model.metrics
            kind = req.WhichOneof("input")
            if kind == "feature_payload":
                data, role = req.feature_payload, "remote"
            elif kind == "image":
                data, role = req.image.data, "reference"
                if role not in p.model.batchers:
                    raise RequestError(pb.UNSUPPORTED, f"model {p.model.name}:{p.model.version} has no reference "
                                                       "model, so it cannot classify images")
            else:
                raise RequestError(pb.INVALID_PAYLOAD, "the request has neither feature_payload nor image")
            p.metrics.payload_bytes.observe(len(data))
            if len(data) > self.max_request_bytes:
                raise RequestError(pb.RESOURCE_EXHAUSTED,
                                   f"input of {len(data)} bytes exceeds the server's limit of {self.max_request_bytes}")
            t = time.perf_counter()
            try:
                if role == "remote":
                    decoded = p.model.codec.decode(data)
                    x, p.channels = decoded.features, decoded.header.channels_sent
                else:
                    x = decode_image(req.image.format, data, p.model.bundle)
            except PayloadError as exc:
                raise RequestError(pb.INVALID_PAYLOAD, str(exc)) from None
            now = time.perf_counter()
            p.decode_s = now - t
            p.metrics.decode_seconds.observe(p.decode_s)
            if deadline is not None and now >= deadline:
                raise RequestError(pb.DEADLINE_EXCEEDED, "deadline exceeded before the request was queued")
            try:
                p.future = p.model.batchers[role].submit(x, deadline, arrival)
            except QueueFull as exc:
                raise RequestError(pb.RESOURCE_EXHAUSTED, str(exc)) from None
            except Closed as exc:
                raise RequestError(pb.UNAVAILABLE, str(exc)) from None
        except RequestError as exc:
            p.error = exc
        except Exception as exc:  # a bug, not the client's fault: answer it, keep the stream alive
            log.exception("request %d: unexpected failure", req.request_id)
            p.error = RequestError(pb.INTERNAL, f"internal error: {exc.__class__.__name__}")
        return p

    async def _finish(self, p: _Pending) -> pb.InferResponse:
        """The reply: logits, or an in-band error. Never raises for a request-level failure."""
        if p.error is None:
            try:
                result = await p.future
            except Expired as exc:
                p.error = RequestError(pb.DEADLINE_EXCEEDED, str(exc))
            except Exception as exc:
                log.warning("request %d failed: %s", p.request_id, exc)
                p.error = RequestError(pb.INTERNAL, f"model run failed: {exc.__class__.__name__}: {exc}")
        total = time.perf_counter() - p.arrival
        metrics = p.metrics or self._unknown
        lean = p.lean
        resp = pb.InferResponse(request_id=p.request_id)
        if lean is None or lean.model:
            resp.model.CopyFrom(p.model.ref if p.model else p.requested)
        if lean is None or lean.channels_received:
            resp.channels_received = p.channels
        timings = lean is None or lean.timings
        if p.error is not None:
            metrics.count(p.error.code_name)
            resp.error.code = p.error.code
            resp.error.message = p.error.message
            if timings:
                resp.timings.decode_us = _us(p.decode_s)
                resp.timings.total_us = _us(total)
            return resp
        metrics.count("OK")
        metrics.request_seconds.observe(total)
        metrics.queue_seconds.observe(result.queue_s)
        resp.logits.CopyFrom(encode_logits(result.output, lean.logits_encoding if lean else pb.LOGITS_FLOAT32))
        if timings:
            t = resp.timings
            t.queue_us, t.decode_us, t.compute_us = _us(result.queue_s), _us(p.decode_s), _us(result.compute_s)
            t.total_us, t.batch_size = _us(total), result.batch_size
        return resp

    @staticmethod
    def _deadline(req: pb.InferRequest, arrival: float, rpc_deadline: float | None) -> float | None:
        deadline = rpc_deadline
        if req.timeout_ms:
            own = arrival + req.timeout_ms / 1000.0
            deadline = own if deadline is None else min(deadline, own)
        return deadline

    @staticmethod
    def _rpc_deadline(context) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.perf_counter() + remaining

    # --- RPCs -------------------------------------------------------------------------------
    async def Infer(self, request, context):
        arrival = time.perf_counter()
        if isinstance(request, MalformedMessage):
            p = self._malformed(request, arrival, "Infer")
            self._unknown.count(p.error.code_name)
            await context.abort(p.error.grpc_status, p.error.message)
        deadline = self._deadline(request, arrival, self._rpc_deadline(context))
        p = self._start(request, deadline, arrival)
        self._enter()
        try:
            resp = await self._finish(p)
        except asyncio.CancelledError:  # gRPC cancels the handler when the client goes or its deadline passes
            expired = deadline is not None and time.perf_counter() >= deadline
            (p.metrics or self._unknown).count("DEADLINE_EXCEEDED" if expired else "CANCELLED")
            raise
        finally:
            self._leave()
        if resp.HasField("error"):
            await context.abort(p.error.grpc_status, p.error.message)
        return resp

    async def InferStream(self, request_iterator, context):
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        rpc_deadline = self._rpc_deadline(context)
        queue: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(self.stream_window)

        read_error: list[BaseException] = []  # why reading stopped before the client closed its side
        defaults = StreamDefaults()

        async def read():
            received = 0
            lean = None  # v1 replies until the first message asks for lean ones
            try:
                async for req in request_iterator:
                    await window.acquire()
                    received += 1
                    arrival = time.perf_counter()
                    if isinstance(req, MalformedMessage):  # answered in-band, in order; the stream carries on
                        p = self._malformed(req, arrival, f"InferStream message {received}")
                    else:
                        if received == 1 and req.HasField("stream_options"):
                            lean = defaults.adopt(req)
                        defaults.fill(req)
                        p = self._start(req, self._deadline(req, arrival, rpc_deadline), arrival)
                    p.lean = lean
                    queue.put_nowait(p)
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # the transport broke or gRPC ended the call (e.g. an oversize message)
                read_error.append(exc)
                log.debug("stream read ended after %d messages: %s", received, exc)
            finally:
                queue.put_nowait(_END)

        self._streams.add(queue)
        self._enter()
        reader = asyncio.get_running_loop().create_task(read())
        draining = False
        try:
            while True:
                p = await queue.get()
                if p is _END:
                    break
                if p is _DRAIN:
                    draining = True
                    reader.cancel()  # read no more; what was read is still answered below
                    continue
                resp = await self._finish(p)
                window.release()
                yield resp
            if draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect")
            if read_error:  # never end OK when reading failed; every request read has been answered above
                exc = read_error[0]
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    f"reading the stream failed ({exc.__class__.__name__}); reconnect")
        finally:
            self._streams.discard(queue)
            reader.cancel()
            while not queue.empty():  # the client went away: drop its queued work from the batches
                p = queue.get_nowait()
                if isinstance(p, _Pending) and p.future is not None:
                    p.future.cancel()
            self._leave()

    async def _reject_malformed(self, request, context, method: str) -> None:
        if isinstance(request, MalformedMessage):
            self._client_error_log("%s: %s", method, request.describe())
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())

    async def GetManifest(self, request, context):
        await self._reject_malformed(request, context, "GetManifest")
        problem = model_ref_problem(request.model)
        if problem is not None:
            await context.abort(grpc.StatusCode.NOT_FOUND, problem)
        try:
            model = self.models.resolve(request.model.name, request.model.version)
        except ModelNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.GetManifestResponse(model=model.ref, manifest_json=model.bundle.manifest_text)

    async def ListModels(self, request, context):
        await self._reject_malformed(request, context, "ListModels")
        refs = [self.models.resolve(name, version).ref for name, version in self.models.repository.models()]
        default = self.models.resolve("", "").ref  # its highest version
        return pb.ListModelsResponse(models=refs, default_model=default)
