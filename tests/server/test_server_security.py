"""Bearer-token auth, TLS and mutual TLS."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest
from server_test_helpers import logits_of

from agilenn.server.testing import running_server
from agilenn.v1 import inference_pb2 as pb
from agilenn.v1 import inference_pb2_grpc as pb_grpc

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "token"
    path.write_text(TOKEN + "\n")
    return path


def _calls(stub, remote, metadata):
    """Every RPC of the service once; returns their status codes."""
    payload = remote.payload(seed=1)
    codes = []
    for call in (
        lambda: stub.Infer(pb.InferRequest(feature_payload=payload), timeout=30, metadata=metadata),
        lambda: list(stub.InferStream(iter([pb.InferRequest(feature_payload=payload)]), timeout=30, metadata=metadata)),
        lambda: stub.GetManifest(pb.GetManifestRequest(), timeout=30, metadata=metadata),
        lambda: stub.ListModels(pb.ListModelsRequest(), timeout=30, metadata=metadata),
    ):
        try:
            call()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    return codes


def test_bearer_token(bundle_dir, remote, token_file):
    with running_server(bundle_dir, auth_token_file=token_file, metrics_port=None) as srv:
        assert srv.health() == "SERVING"  # probes need no token
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.InferenceStub(channel)
            assert _calls(stub, remote, None) == [grpc.StatusCode.UNAUTHENTICATED] * 4
            assert _calls(stub, remote, (("authorization", "Bearer wrong"),)) == [grpc.StatusCode.UNAUTHENTICATED] * 4
            assert _calls(stub, remote, (("authorization", TOKEN),)) == [grpc.StatusCode.UNAUTHENTICATED] * 4
            assert _calls(stub, remote, GOOD) == [grpc.StatusCode.OK] * 4
            # RFC 6750: the scheme name is case-insensitive; the token is not
            for header in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr  {TOKEN}"):
                assert _calls(stub, remote, (("authorization", header),)) == [grpc.StatusCode.OK] * 4
            assert _calls(stub, remote, (("authorization", f"Bearer {TOKEN.upper()}"),)) == \
                [grpc.StatusCode.UNAUTHENTICATED] * 4
            # reflection needs no token (it describes the public schema; grpcurl asks it first), both versions
            for version in ("v1", "v1alpha"):
                assert "agilenn.v1.Inference" in _reflected_services(channel, version)
            with pytest.raises(grpc.RpcError) as info:
                stub.Infer(pb.InferRequest(feature_payload=b"x"), timeout=30)
            assert "bearer token" in info.value.details()


def _reflected_services(channel, version):
    from grpc_reflection.v1alpha import reflection_pb2 as r

    info = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                 request_serializer=r.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=r.ServerReflectionResponse.FromString)
    (reply,) = list(info(iter([r.ServerReflectionRequest(list_services="")]), timeout=30))
    return [s.name for s in reply.list_services_response.service]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=agilenn test CA",
             cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def _tls_stub(address, pki, client_cert: bool):
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(pki / "client.pem").read_bytes() if client_cert else None,
    )
    channel = grpc.secure_channel(address, creds)
    return channel, pb_grpc.InferenceStub(channel)


def _infer(stub, remote, metadata=None):
    try:
        return logits_of(stub.Infer(pb.InferRequest(feature_payload=remote.payload(seed=2)), timeout=10,
                                    metadata=metadata))
    except grpc.RpcError as exc:
        return exc.code()


def test_tls(bundle_dir, remote, pki):
    with running_server(bundle_dir, tls_cert=pki / "server.pem", tls_key=pki / "server.key", metrics_port=None) as srv:
        channel, stub = _tls_stub(srv.address, pki, client_cert=False)
        with channel:
            assert len(_infer(stub, remote)) == 10
        with grpc.insecure_channel(srv.address) as plain:
            assert _infer(pb_grpc.InferenceStub(plain), remote) == grpc.StatusCode.UNAVAILABLE
        from agilenn.server.healthcheck import check
        assert check(srv.address, ca=pki / "ca.pem") == "SERVING"


def test_mutual_tls_with_token(bundle_dir, remote, pki, token_file):
    with running_server(bundle_dir, tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                        tls_client_ca=pki / "ca.pem", auth_token_file=token_file, metrics_port=None) as srv:
        channel, stub = _tls_stub(srv.address, pki, client_cert=False)
        with channel:
            assert _infer(stub, remote, GOOD) == grpc.StatusCode.UNAVAILABLE  # handshake refused
        channel, stub = _tls_stub(srv.address, pki, client_cert=True)
        with channel:
            assert _infer(stub, remote) == grpc.StatusCode.UNAUTHENTICATED
            assert len(_infer(stub, remote, GOOD)) == 10
        from agilenn.server.healthcheck import check
        assert check(srv.address, ca=pki / "ca.pem", client_cert=pki / "client.pem", client_key=pki / "client.key",
                     server_name="localhost") == "SERVING"
        assert check(srv.address, ca=pki / "ca.pem") != "SERVING"  # no client certificate
