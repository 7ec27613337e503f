"""The agent's TLS and token flags against a server started with the matching options."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from agilenn.server.testing import running_server


def _make_certs(d):
    """CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    ssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=agent-test-ca")
    for who, ext in (("srv", "subjectAltName=IP:127.0.0.1"), ("dev", "extendedKeyUsage=clientAuth")):
        ssl("req", "-new", *key[:5], "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        (d / f"{who}.ext").write_text(ext + "\n")
        ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-out", f"{who}.pem", "-extfile", f"{who}.ext")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")
def test_mutual_tls_and_token_flags(tmp_path, synthetic_bundle):
    _make_certs(tmp_path)
    (tmp_path / "token").write_text("t0ken\n")
    with running_server(synthetic_bundle, tls_cert=tmp_path / "srv.pem", tls_key=tmp_path / "srv.key",
                        tls_client_ca=tmp_path / "ca.pem", auth_token_file=tmp_path / "token") as srv:
        base = [sys.executable, "-m", "agilenn.device_agent.cli", "--bundle", str(synthetic_bundle),
                "--server", srv.address, "--dataset", "fashion-mnist", "--limit", "3", "--json", "--quiet",
                "--connect-wait-s", "10"]
        good = base + ["--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert", str(tmp_path / "dev.pem"),
                       "--tls-key", str(tmp_path / "dev.key"), "--auth-token-file", str(tmp_path / "token")]
        out = subprocess.run(good, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["degraded"] == 0
        # Without the client certificate the handshake fails: answers still come, all local.
        no_cert = base[:-2] + ["--connect-wait-s", "1", "--tls-ca", str(tmp_path / "ca.pem"),
                               "--auth-token-file", str(tmp_path / "token")]
        out = subprocess.run(no_cert, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["n"] == 3 and summary["degraded"] == 3
