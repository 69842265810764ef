"""`sentinel hub serve` over HTTPS, as an operator runs it: flags or environment variables."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support.hub_auth import ADMIN_KEY
from tests.support.tls import Pki

pytestmark = pytest.mark.timeout(120)


def _serve(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", "hub", "serve", *args], cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "SENTINEL_ADMIN_KEY": ADMIN_KEY, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_hub_serve_speaks_https_with_the_certificate_given(tmp_path: Path, how: str) -> None:
    pki = Pki(tmp_path)
    trust = ssl.create_default_context(cafile=str(pki.ca_file))
    port = free_port()
    args = ["--port", str(port), "--database", "sqlite:///hub.db"]
    if how == "flags":
        proc = _serve(*args, "--tls-cert", str(pki.hub_cert_file), "--tls-key", str(pki.hub_key_file), cwd=tmp_path)
    else:
        proc = _serve(*args, cwd=tmp_path, SENTINEL_TLS_CERT=str(pki.hub_cert_file),
                      SENTINEL_TLS_KEY=str(pki.hub_key_file))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "the hub did not come up over HTTPS"
                time.sleep(0.1)
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP to the TLS port goes nowhere
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert f"hub: serving on https://127.0.0.1:{port}" in out


def test_hub_serve_wants_the_certificate_and_its_key_together(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "hub", "serve", "--tls-cert",
                           str(pki.hub_cert_file)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "SENTINEL_ADMIN_KEY": ADMIN_KEY})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("sentinel: error: --tls-cert and --tls-key go together "
                                   "(or $SENTINEL_TLS_CERT and $SENTINEL_TLS_KEY)")
