"""Bearer-token authentication as a server interceptor.

Every call must carry ``authorization: Bearer <token>`` (the scheme name in any case, RFC 6750
section 2.1 / RFC 9110 section 11.1), except two standard services that reveal nothing secret:
- health: orchestrators (Docker, Kubernetes) probe it without credentials;
- server reflection (v1 and v1alpha): it describes only the public agilenn.v1 schema (the .proto is
  published with the project), and stock tools such as grpcurl fetch it before sending any call,
  often without passing the call's headers along, so requiring a token there breaks them while
  protecting nothing. The inference calls themselves still need the token.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
EXEMPT_PREFIXES = (HEALTH_PREFIX, "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/")


def read_token(path) -> str:
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"auth token file {path} is empty")
    return token


def _deny_handler(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    async def deny_unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator, as a streaming handler must be

    des = handler.request_deserializer if handler else None
    ser = handler.response_serializer if handler else None
    if handler is None or (not handler.request_streaming and not handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(deny_unary, des, ser)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny_unary, des, ser)
    return grpc.unary_stream_rpc_method_handler(deny_stream, des, ser)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = token.encode()

    def _accepts(self, header: bytes) -> bool:
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(b" "), self._expected)

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        given = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        if given is not None and self._accepts(given):
            return await continuation(handler_call_details)
        message = "missing bearer token" if given is None else "invalid bearer token"
        return _deny_handler(await continuation(handler_call_details), message)
