"""Container healthcheck: exit 0 when the server's grpc.health.v1 says SERVING, else 1.

    python -m agilenn.server.healthcheck [--address 127.0.0.1:50051] [--service NAME] [--timeout 2]
        [--tls-ca ca.pem [--tls-client-cert c.pem --tls-client-key c.key] [--tls-server-name NAME]]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0, ca: Path | None = None,
          client_cert: Path | None = None, client_key: Path | None = None, server_name: str | None = None) -> str:
    """The service's status name (SERVING, NOT_SERVING, ...) or the gRPC error code's name."""
    if ca is not None:
        creds = grpc.ssl_channel_credentials(
            Path(ca).read_bytes(),
            private_key=Path(client_key).read_bytes() if client_key else None,
            certificate_chain=Path(client_cert).read_bytes() if client_cert else None,
        )
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, creds, options=options)
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
    p.add_argument("--tls-ca", type=Path, help="PEM CA to verify a TLS server (enables TLS)")
    p.add_argument("--tls-client-cert", type=Path, help="PEM client certificate, for a mutual-TLS server")
    p.add_argument("--tls-client-key", type=Path, help="PEM key of --tls-client-cert")
    p.add_argument("--tls-server-name", help="expected name in the server certificate (default: the host)")
    args = p.parse_args(argv)
    status = check(args.address, args.service, args.timeout, args.tls_ca, args.tls_client_cert,
                   args.tls_client_key, args.tls_server_name)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
