"""What arrives off the wire before the servicer trusts it: protobuf parsing, model names, echoes.

- Requests are parsed by a tolerant deserializer: bytes that are not a valid protobuf message of
  the method's type become a ``MalformedMessage`` instead of an exception, so the servicer answers
  them like any other bad request (INVALID_ARGUMENT on a unary call, an in-band error on a stream)
  rather than gRPC answering UNKNOWN with a logged traceback or a stream ending without its replies.
- Model names and versions are bounded before they are looked up or echoed: a client-chosen string
  goes into error messages, and a unary call's message travels in a gRPC trailer whose size is
  limited (a 20 KB name would turn a NOT_FOUND into RESOURCE_EXHAUSTED).
- Client errors are logged as one line each, at most once per interval, so a client cannot flood
  the server log.
"""

from __future__ import annotations

import logging
import time

import grpc

from agilenn.v1 import inference_pb2 as pb

# Longest model name and version the server looks up; longer ones cannot be served.
MAX_NAME_CHARS = 128
MAX_VERSION_CHARS = 64
# Longest client-chosen string quoted in an error message.
MAX_ECHO_CHARS = 64
# Longest error message sent (a gRPC trailer on unary calls; gRPC's default metadata limit is 8 KiB).
MAX_MESSAGE_CHARS = 1024


class MalformedMessage:
    """Stands in for a request whose bytes do not parse as the method's protobuf message."""

    def __init__(self, type_name: str, size: int, reason: str):
        self.type_name = type_name
        self.size = size
        self.reason = reason

    def describe(self) -> str:
        return f"the {self.size}-byte message is not a valid {self.type_name} protobuf ({clip(self.reason, 160)})"


def tolerant(message_class):
    """A request deserializer that returns MalformedMessage instead of raising."""
    type_name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError, and whatever else the parser raises for hostile bytes
            return MalformedMessage(type_name, len(data), f"{exc.__class__.__name__}: {exc}")

    return deserialize


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` shortened to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def _printable(text: str) -> bool:
    return text.isprintable()


def model_ref_problem(ref: pb.ModelRef) -> str | None:
    """Why this ModelRef cannot name a served model, or None if it may."""
    for what, value, limit in (("name", ref.name, MAX_NAME_CHARS), ("version", ref.version, MAX_VERSION_CHARS)):
        if len(value) > limit:
            return f"model {what} of {len(value)} characters is longer than the {limit} the server accepts"
        if not _printable(value):
            return f"model {what} {clip(value)!r} contains control characters"
    return None


def echoed_ref(ref: pb.ModelRef) -> pb.ModelRef:
    """The requested ModelRef as a reply may echo it: bounded in size."""
    return pb.ModelRef(name=clip(ref.name, MAX_NAME_CHARS), version=clip(ref.version, MAX_VERSION_CHARS))


def inference_handlers(servicer) -> grpc.GenericRpcHandler:
    """agilenn.v1.Inference as the generated add_InferenceServicer_to_server registers it, but with
    tolerant request deserializers (the generated ones raise on malformed bytes)."""
    methods = {
        "Infer": grpc.unary_unary_rpc_method_handler(
            servicer.Infer, tolerant(pb.InferRequest), pb.InferResponse.SerializeToString),
        "InferStream": grpc.stream_stream_rpc_method_handler(
            servicer.InferStream, tolerant(pb.InferRequest), pb.InferResponse.SerializeToString),
        "GetManifest": grpc.unary_unary_rpc_method_handler(
            servicer.GetManifest, tolerant(pb.GetManifestRequest), pb.GetManifestResponse.SerializeToString),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            servicer.ListModels, tolerant(pb.ListModelsRequest), pb.ListModelsResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler(pb.DESCRIPTOR.services_by_name["Inference"].full_name, methods)


class RateLimitedLog:
    """One log line per event, at most one per ``interval_s``; the next line counts what was skipped."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, level: int = logging.WARNING):
        self._log = logger
        self._interval = interval_s
        self._level = level
        self._next = 0.0
        self._skipped = 0

    def __call__(self, message: str, *args) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        if self._skipped:
            message += f" (and {self._skipped} more client errors in the last {self._interval:g} s, not logged)"
        self._log.log(self._level, message, *args)
        self._next = now + self._interval
        self._skipped = 0
