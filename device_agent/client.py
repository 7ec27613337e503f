"""The agent's connection to the inference server: one long-lived InferStream, kept alive in the background.

infer() never blocks longer than its deadline and never raises for a network problem: it returns a
RemoteReply whose ``reason`` says why there are no remote logits, and the agent answers locally.
A supervisor thread (re)connects with exponential backoff; each connection first checks with
GetManifest that the server serves the agent's own model name and version, and refuses to send
features to anything else.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from agilenn.server.logits import ENCODINGS, decode_logits
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc

from .messages import Reason

log = logging.getLogger("agilenn.agent.client")

# Manifest fields both ends must agree on for the features to mean the same thing.
_MUST_MATCH = ("input", "classes", "features", "quantizer", "alpha")

# Chosen against link chatter (bytes on a slow radio link that carry no inference), measured in
# benchmarks/RESULTS.md ("Lean stream messages"):
# - no BDP probing: the estimator PINGs the server (17 B, and 17 B of PING ACK back) to size windows
#   for bulk transfers; one small reply at a time never needs a bigger window than the default 64 KiB;
# - no keepalive PINGs (gRPC's client default, kept on purpose): a hung server is noticed by missed
#   deadlines (max_deadline_misses) instead of a periodic 34 B round trip on an idle link;
# - HTTP/2 windows stay at the default: gRPC core piggybacks a connection- and a stream-level
#   WINDOW_UPDATE (13 B each) on the next write after every message it reads, whatever the window
#   size (chttp2 flow control: "writing anyway" sends the update), so a larger window saves nothing.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.http2.bdp_probe", 0),
]
# float16 changes 1 of 10,000 merged predictions on the shipped Fashion-MNIST bundle, int16 none
# (benchmarks/logits_precision.py, RESULTS.md); int16 costs 3 B more per reply (its scale).
DEFAULT_LOGITS_ENCODING = "int16"

# Several replicas (an address list or a dns:/// name): gRPC's own client-side balancing. round_robin
# keeps a connection to every resolved address and spreads new calls over the ready ones; health
# checking (grpc.health.v1 Watch on the server's Inference service) takes a draining or sick
# replica out of the picks before its connection goes. See docs/server.md, "Deploying".
_REPLICA_SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "agilenn.v1.Inference"},
})


def channel_target(server: str) -> tuple[str, bool]:
    """The gRPC target for ``--server``, and whether it names several replicas.

    ``host:port`` is used as it is (one server). ``a:port,b:port,...`` must be IP literals (gRPC's
    ``ipv4:``/``ipv6:`` address lists; host names have no list syntax in gRPC); for host names use
    one DNS name that resolves to every replica, ``dns:///name:port`` (e.g. a Kubernetes headless
    Service), which is re-resolved when connections fail.
    """
    server = server.strip()
    if server.startswith("dns:"):
        return server, True
    if "," not in server:
        return server, False
    families, hosts = set(), []
    for item in (part.strip() for part in server.split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or host.count(":") == 1:
            raise ValueError(f"--server {server!r}: {item!r} has no valid port (IP:PORT, [IPv6]:PORT)")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            family = ipaddress.ip_address(host).version
        except ValueError:
            raise ValueError(f"--server {server!r}: {item!r} is not IP:PORT; a list of servers takes IP "
                             "addresses (for host names use one DNS name, dns:///NAME:PORT)") from None
        families.add(family)
        hosts.append(f"[{host}]:{port}" if family == 6 else f"{host}:{port}")
    if len(families) > 1:
        raise ValueError(f"--server {server!r}: mixes IPv4 and IPv6 addresses (gRPC lists take one family)")
    return f"ipv{families.pop()}:{','.join(hosts)}", True


@dataclass
class ClientSecurity:
    """TLS and token settings, mirroring the server's (docs/agent.md, "Security")."""

    tls: bool = False
    ca_file: str | None = None  # PEM roots to trust; None: the system's
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = None
    server_name: str | None = None  # override the name checked against the server certificate
    token: str | None = None  # sent as "authorization: Bearer <token>"

    def metadata(self):
        return (("authorization", f"Bearer {self.token}"),) if self.token else None


@dataclass
class RemoteReply:
    logits: np.ndarray | None = None  # remote logits, None when the request failed
    reason: int = Reason.NONE
    detail: str = ""
    sent: bool = False  # the payload went on the wire
    network_ms: float = 0.0  # send to reply (or to giving up)
    channels_received: int = 0
    timings: dict = field(default_factory=dict)  # the server's: queue_ms, decode_ms, compute_ms, total_ms, batch_size


class _Pending:
    __slots__ = ("done", "reply")

    def __init__(self):
        self.done = threading.Event()
        self.reply: RemoteReply | None = None


@dataclass
class InFlight:
    """A request RemoteClient.send() put on the stream (or a reply it had at once: not sent)."""

    start: float  # time.perf_counter() at the send
    deadline_s: float | None
    request_id: int | None = None
    pending: _Pending | None = None
    reply: RemoteReply | None = None  # set at once when the request could not go out


class ModelMismatch(RuntimeError):
    pass


def _read(path):
    with open(path, "rb") as fh:
        return fh.read()


class RemoteClient:
    def __init__(
        self,
        address: str,
        manifest: dict,
        security: ClientSecurity | None = None,
        connect_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 2.0,
        max_deadline_misses: int = 3,
        failover_wait_s: float = 0.25,
        server_timings: bool = False,
        logits_encoding: str = DEFAULT_LOGITS_ENCODING,
    ):
        self.address = address
        self.target, self.replicas = channel_target(address)  # ValueError names a bad --server at once
        self.model = pb.ModelRef(name=manifest["model"]["name"], version=manifest["model"]["version"])
        self._manifest = manifest
        self.security = security or ClientSecurity()
        self.connect_timeout_s = connect_timeout_s
        # GetManifest carries the whole manifest.json (35-52 KB for the shipped bundles): at BLE's
        # 270 kbps that is 1.1-1.6 s of air time before TCP slow start and flow-control round trips,
        # so the connect deadline alone (2 s) never let the agent connect on that link with the
        # CIFAR-10 bundles. The check gets at least the time the manifest needs at 20 kbps.
        self.manifest_timeout_s = max(connect_timeout_s, 8 * len(json.dumps(manifest)) / 20_000)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        # A server that stops answering without closing the connection (hung, or the host vanished)
        # would cost every request the full deadline; after this many misses in a row the stream is
        # torn down, answers go local at once, and the reconnect loop finds out whether it is alive.
        self.max_deadline_misses = max_deadline_misses
        self._misses = 0
        # Several replicas: right after a stream breaks, a survivor usually takes over within
        # milliseconds (tests/deploy/test_replicas.py), so inputs arriving in this window wait for
        # it (never past their deadline) instead of being answered locally at once.
        self.failover_wait_s = failover_wait_s
        self._down_since: float | None = None
        # A lean stream (docs/protocol.md, "Lean streams"): the first message sets the model and
        # timeout for the whole stream and says what replies carry; later ones are the payload
        # alone. ServerTimings cost ~15 B per reply: only when asked for.
        if logits_encoding not in ENCODINGS:
            raise ValueError(f"logits encoding must be one of {', '.join(ENCODINGS)}, got {logits_encoding!r}")
        self.stream_options = pb.StreamOptions(timings=server_timings, logits_encoding=ENCODINGS[logits_encoding])
        self._stream_timeout_ms: int | None = None  # None: the current stream's first message is still to go

        self._lock = threading.Condition()
        self._state = "connecting"  # connecting | ready | down | mismatch | closed
        self._state_detail = "not connected yet"
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        # Lean requests carry no request_id (3 B saved each way): the server answers every message
        # of a stream exactly once and in order, so the n-th reply answers the n-th request sent.
        self._in_order: collections.deque = collections.deque()
        self._requests: queue.SimpleQueue | None = None
        self._channel: grpc.Channel | None = None
        self._call = None
        self._closed = threading.Event()
        self.connects = 0  # successful connections so far (a reconnect counts again)
        self._supervisor = threading.Thread(target=self._supervise, name="agilenn-agent-connect", daemon=True)
        self._supervisor.start()

    # --- state -----------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def state_detail(self) -> str:
        return self._state_detail

    @property
    def connected(self) -> bool:
        return self._state == "ready"

    def wait_connected(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._state in ("ready", "closed"), timeout) and self._state == "ready"

    def _set_state(self, state: str, detail: str) -> None:
        with self._lock:
            if self._state == "closed":
                return
            if state != self._state:
                log.info("server %s: %s (%s)", self.address, state, detail)
            self._state, self._state_detail = state, detail
            self._lock.notify_all()

    # --- connection management ---------------------------------------------------------------
    def _make_channel(self) -> grpc.Channel:
        s = self.security
        options = list(CHANNEL_OPTIONS)
        if self.replicas:
            options.append(("grpc.service_config", _REPLICA_SERVICE_CONFIG))
        if s.server_name:
            options.append(("grpc.ssl_target_name_override", s.server_name))
        if not (s.tls or s.ca_file or s.cert_file):
            return grpc.insecure_channel(self.target, options=options)
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(s.ca_file) if s.ca_file else None,
            private_key=_read(s.key_file) if s.key_file else None,
            certificate_chain=_read(s.cert_file) if s.cert_file else None,
        )
        return grpc.secure_channel(self.target, creds, options=options)

    def _check_manifest(self, stub) -> None:
        try:
            reply = stub.GetManifest(pb.GetManifestRequest(model=self.model), timeout=self.manifest_timeout_s,
                                     metadata=self.security.metadata())
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ModelMismatch(f"server does not serve {self.model.name}:{self.model.version} ({exc.details()})")
            raise
        served = json.loads(reply.manifest_json)
        if (reply.model.name, reply.model.version) != (self.model.name, self.model.version):
            raise ModelMismatch(f"server answers with {reply.model.name}:{reply.model.version}, "
                                f"this agent runs {self.model.name}:{self.model.version}")
        different = [k for k in _MUST_MATCH if served.get(k) != self._manifest.get(k)]
        if different:
            raise ModelMismatch(f"server's {self.model.name}:{self.model.version} differs from this agent's in "
                                f"{', '.join(different)}: not the same bundle")

    def _connect(self) -> None:
        channel = self._make_channel()
        try:
            stub = pb_grpc.InferenceStub(channel)
            self._check_manifest(stub)
            requests: queue.SimpleQueue = queue.SimpleQueue()
            call = stub.InferStream(iter(requests.get, None), metadata=self.security.metadata())
        except BaseException:
            channel.close()
            raise
        with self._lock:
            if self._state == "closed":
                call.cancel()
                channel.close()
                return
            # Ready in the same critical section that installs the stream, so a stream that breaks
            # at once is seen as down by the supervisor rather than lost behind a stale "ready".
            self._channel, self._call, self._requests = channel, call, requests
            self._stream_timeout_ms = None
            self._state, self._state_detail, self._misses = "ready", f"connected to {self.address}", 0
            self.connects += 1
            self._lock.notify_all()
        log.info("server %s: ready", self.address)
        threading.Thread(target=self._read_replies, args=(call, channel, requests), name="agilenn-agent-stream",
                         daemon=True).start()

    def _supervise(self) -> None:
        backoff = self.backoff_initial_s
        while not self._closed.is_set():
            with self._lock:
                # Sleep while the stream is up; the reader thread wakes us when it breaks.
                self._lock.wait_for(lambda: self._state != "ready" or self._closed.is_set())
            if self._closed.is_set():
                return
            try:
                self._connect()
                backoff = self.backoff_initial_s
                continue
            except ModelMismatch as exc:
                self._set_state("mismatch", str(exc))
            except grpc.RpcError as exc:
                self._set_state("down", f"{exc.code().name}: {exc.details()}")
            except Exception as exc:  # bad certificate files and the like: keep trying, say why
                self._set_state("down", f"{exc.__class__.__name__}: {exc}")
            self._closed.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def _read_replies(self, call, channel, requests) -> None:
        detail = "stream ended"
        try:
            for reply in call:
                with self._lock:
                    if self._call is not call:  # retired (deadline misses): its replies answer nobody now
                        break
                    request_id = self._in_order.popleft() if self._in_order else None
                    pending = self._pending.pop(request_id, None)
                if pending is not None:  # None: its caller gave up at the deadline
                    pending.reply = self._convert(reply)
                    pending.done.set()
        except grpc.RpcError as exc:
            detail = f"stream broke: {exc.code().name}: {exc.details()}"
        except Exception as exc:  # pragma: no cover - defensive: never leave callers hanging
            detail = f"stream reader failed: {exc!r}"
        self._drop_stream(call, detail)
        channel.close()

    def _drop_stream(self, call, detail: str) -> None:
        """Retire ``call`` if it is still the current stream: fail its waiters, wake the supervisor."""
        with self._lock:
            if self._call is not call:
                return  # already retired (a deadline-miss teardown, or close())
            requests = self._requests
            self._call = self._requests = None
            failed, self._pending = self._pending, {}
            self._in_order.clear()
            if self._state != "closed":
                log.info("server %s: down (%s)", self.address, detail)
                self._state, self._state_detail = "down", detail
                self._down_since = time.monotonic()
            self._lock.notify_all()
        requests.put(None)  # ends the request iterator
        for pending in failed.values():
            pending.reply = RemoteReply(reason=Reason.STREAM_BROKEN, detail=detail, sent=True)
            pending.done.set()

    @staticmethod
    def _convert(reply) -> RemoteReply:
        timings = {}
        if reply.HasField("timings"):
            t = reply.timings
            timings = {"queue_ms": t.queue_us / 1e3, "decode_ms": t.decode_us / 1e3, "compute_ms": t.compute_us / 1e3,
                       "total_ms": t.total_us / 1e3, "batch_size": t.batch_size}
        if reply.WhichOneof("result") == "logits":
            try:
                logits = decode_logits(reply.logits)
            except ValueError as exc:
                return RemoteReply(reason=Reason.SERVER_ERROR, detail=f"unreadable logits: {exc}", sent=True,
                                   timings=timings)
            return RemoteReply(logits, sent=True, channels_received=reply.channels_received, timings=timings)
        err = reply.error
        reason = Reason.DEADLINE if err.code == pb.DEADLINE_EXCEEDED else Reason.SERVER_ERROR
        return RemoteReply(reason=reason, detail=f"{pb.ErrorCode.Name(err.code)}: {err.message}", sent=True,
                           timings=timings)

    # --- requests ---------------------------------------------------------------------------
    def infer(self, payload: bytes, deadline_s: float | None) -> RemoteReply:
        return self.wait(self.send(payload, deadline_s))

    def send(self, payload: bytes, deadline_s: float | None) -> "InFlight":
        """Put the request on the stream and return at once; wait() gives its reply. Split from
        infer() so that a caller can work while the request is out (the serial FEATURES of protocol
        version 3: the MCU's local predictor runs meanwhile)."""
        flight = InFlight(time.perf_counter(), deadline_s)
        with self._lock:
            # b"": the caller skipped encoding because the link was down (Agent.infer); never send it,
            # even if the stream came back in between.
            if self._state != "ready" or self._requests is None or not payload:
                reason = Reason.MODEL_MISMATCH if self._state == "mismatch" else Reason.SERVER_UNAVAILABLE
                flight.reply = RemoteReply(reason=reason, detail=self._state_detail)
                return flight
            flight.request_id = request_id = next(self._ids)
            self._pending[request_id] = flight.pending = _Pending()
            self._in_order.append(request_id)
            timeout_ms = 0 if deadline_s is None else max(1, int(deadline_s * 1e3))
            request = pb.InferRequest(feature_payload=payload)
            if self._stream_timeout_ms is None:  # the stream's first message: its defaults, once
                request.model.CopyFrom(self.model)
                request.stream_options.CopyFrom(self.stream_options)
                request.timeout_ms = self._stream_timeout_ms = timeout_ms
            elif timeout_ms != self._stream_timeout_ms:
                request.timeout_ms = timeout_ms
            self._requests.put(request)
        return flight

    def wait(self, flight: "InFlight") -> RemoteReply:
        """The reply to a send(), or a degraded one when none came within its deadline (counted from the send)."""
        if flight.pending is None:  # never sent: send() answered at once
            return flight.reply
        pending, deadline_s = flight.pending, flight.deadline_s
        remaining = None if deadline_s is None else max(0.0, flight.start + deadline_s - time.perf_counter())
        if not pending.done.wait(remaining):
            with self._lock:
                self._pending.pop(flight.request_id, None)
            if pending.reply is None:  # it may have landed between the wait and the pop
                self._missed_deadline()
                return RemoteReply(reason=Reason.DEADLINE, detail=f"no reply within {deadline_s * 1e3:.0f} ms",
                                   sent=True, network_ms=(time.perf_counter() - flight.start) * 1e3)
        self._misses = 0
        reply = pending.reply
        reply.network_ms = (time.perf_counter() - flight.start) * 1e3
        return reply

    def wait_ready(self, deadline_s: float | None) -> bool:
        """Whether a request can go out now. With several replicas, just after the stream broke,
        first wait (at most failover_wait_s since the break, and never past deadline_s) for the
        reconnection to a survivor; otherwise answer at once."""
        with self._lock:
            if self.replicas and self._state in ("down", "connecting") and self._down_since is not None:
                now = time.monotonic()
                end = min(self._down_since + self.failover_wait_s,
                          now + (deadline_s if deadline_s is not None else self.failover_wait_s))
                self._lock.wait_for(lambda: self._state not in ("down", "connecting"), max(0.0, end - now))
            return self._state == "ready"

    def _missed_deadline(self) -> None:
        with self._lock:
            self._misses += 1
            call = self._call if self._misses >= self.max_deadline_misses else None
        if call is not None:
            log.warning("server %s: %d deadlines missed in a row, reconnecting", self.address, self._misses)
            self._misses = 0
            self._drop_stream(call, f"{self.max_deadline_misses} deadlines missed in a row")
            call.cancel()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._state = "closed"
            self._lock.notify_all()
            call, channel, requests = self._call, self._channel, self._requests
        if requests is not None:
            requests.put(None)
        if call is not None:
            call.cancel()
        if channel is not None:
            channel.close()
        self._supervisor.join(timeout=5)
