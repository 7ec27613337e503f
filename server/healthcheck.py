"""Container healthcheck: exit 0 when the server's grpc.health.v1 says SERVING, else 1.

    python -m agilenn.server.healthcheck [--address 127.0.0.1:50051] [--service NAME] [--timeout 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0, ca: Path | None = None) -> str:
    """The service's status name (SERVING, NOT_SERVING, ...) or the gRPC error code's name."""
    if ca is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(ca).read_bytes()))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m agilenn.server.healthcheck", description=__doc__.splitlines()[0])
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--service", default="", help="service name ('' = the whole server)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--tls-ca", type=Path, help="PEM CA to verify a TLS server")
    args = p.parse_args(argv)
    status = check(args.address, args.service, args.timeout, args.tls_ca)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
