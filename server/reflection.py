"""gRPC server reflection under both names stock tools use: grpc.reflection.v1 and v1alpha.

grpcio-reflection ships only the v1alpha service, while grpcurl, Postman and newer clients ask for
grpc.reflection.v1 first. The two protos differ only in their package name: every message and
field number is the same (grpc/grpc-proto, grpc/reflection/v1/reflection.proto), so the v1alpha
servicer answers v1 calls byte for byte. This module adds the v1 file descriptor to the
descriptor pool (so reflection can describe itself under both names) and registers the one
servicer under both service names; it does not reimplement reflection.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from .wire import MalformedMessage, tolerant

V1ALPHA_SERVICE = v1alpha.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """The v1alpha file descriptor, renamed to package grpc.reflection.v1, added to ``pool``."""
    try:
        pool.FindFileByName(_V1_FILE)
        return  # already there (another module, or a second server in this process)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old = proto.package
    proto.name, proto.package = _V1_FILE, V1_PACKAGE
    proto.options.Clear()  # language options (e.g. java_package) name the v1alpha package
    for message in proto.message_type:
        for f in message.field:
            if f.type_name.startswith(f".{old}."):
                f.type_name = f".{V1_PACKAGE}." + f.type_name[len(old) + 2:]
    for service in proto.service:
        for m in service.method:
            m.input_type = m.input_type.replace(f".{old}.", f".{V1_PACKAGE}.")
            m.output_type = m.output_type.replace(f".{old}.", f".{V1_PACKAGE}.")
    pool.Add(proto)


def enable_reflection(service_names, server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (plus both reflection services) as v1 and v1alpha."""
    _add_v1_descriptor(descriptor_pool.Default())
    servicer = v1alpha.aio.ReflectionServicer(tuple(service_names) + (V1_SERVICE, V1ALPHA_SERVICE))

    async def info(request_iterator, context):
        async def parsed():  # malformed bytes: INVALID_ARGUMENT, not an UNKNOWN with a logged traceback
            async for request in request_iterator:
                if isinstance(request, MalformedMessage):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
                yield request

        async for response in servicer.ServerReflectionInfo(parsed(), context):
            yield response

    method = grpc.stream_stream_rpc_method_handler(
        info,
        request_deserializer=tolerant(v1alpha_pb2.ServerReflectionRequest),
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method})
                                     for name in (V1_SERVICE, V1ALPHA_SERVICE)])
