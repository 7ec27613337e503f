"""One error type for a request that fails, carrying the proto's ErrorCode.

Unary calls turn it into a gRPC status; streams answer it in-band (InferResponse.error) and carry on.
"""

from __future__ import annotations

import grpc

from agilenn.v1 import inference_pb2 as pb

from .wire import MAX_MESSAGE_CHARS, clip

GRPC_STATUS = {
    pb.INVALID_PAYLOAD: grpc.StatusCode.INVALID_ARGUMENT,
    pb.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    pb.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    pb.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    pb.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    pb.INTERNAL: grpc.StatusCode.INTERNAL,
    pb.UNSUPPORTED: grpc.StatusCode.FAILED_PRECONDITION,
}


class RequestError(Exception):
    def __init__(self, code: int, message: str):
        message = clip(message, MAX_MESSAGE_CHARS)  # a unary call sends it in a size-limited trailer
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        return pb.ErrorCode.Name(self.code)

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return GRPC_STATUS.get(self.code, grpc.StatusCode.UNKNOWN)
