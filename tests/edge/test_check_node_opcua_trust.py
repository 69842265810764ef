"""`sentinel edge check` against node-opcua (a stack we did not write) that does not trust the edge's
certificate: node-opcua hangs up while the secure channel is being opened, which asyncua used to
report as ``AssertionError``; the check says plainly what to do, naming the server and the
certificate's thumbprint. Skipped (failed under CI) without node-opcua, as the interop tests are."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from edge.check import check_devices
from protocols.config import FirmwareConfig
from protocols.opcua.source import certificate_thumbprint
from simulator.opcua_server import make_certificate
from tests.conftest import free_port
from tests.protocols.test_opcua_interop import NODE_OPCUA_DIR, SERVER_JS, _missing

pytestmark = pytest.mark.timeout(90)

STRICT_JS = SERVER_JS.replace("automaticallyAcceptUnknownCertificate: true", "automaticallyAcceptUnknownCertificate: false")


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A node-opcua server that trusts no client certificate it has not been given: (url, ns)."""
    assert STRICT_JS != SERVER_JS
    node = shutil.which("node")
    if node is None:
        _missing("Node.js is not installed")
    if not (NODE_OPCUA_DIR / "node_modules" / "node-opcua-server").is_dir():
        _missing(f"node-opcua-server is not installed in {NODE_OPCUA_DIR}")
    work = tmp_path_factory.mktemp("node-opcua-strict")
    (work / "server.js").write_text(STRICT_JS)
    port = free_port()
    env = {**os.environ, "NODE_PATH": str(NODE_OPCUA_DIR / "node_modules")}
    proc = subprocess.Popen([node, str(work / "server.js"), str(port), str(work)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=work)
    try:
        deadline = time.monotonic() + 40
        ns = None
        assert proc.stdout is not None
        while time.monotonic() < deadline and ns is None:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("READY ns="):
                ns = int(line.split("=", 1)[1])
        if ns is None:
            pytest.fail("node-opcua server did not start")
        yield f"opc.tcp://127.0.0.1:{port}/sentinel", ns
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_node_opcua_refusing_the_edge_certificate_is_reported_plainly(strict_server: tuple[str, int],
                                                                       tmp_path: Path) -> None:
    url, ns = strict_server
    cert = make_certificate(tmp_path, "edge", "urn:smartgrid-sentinel:edge:strict")
    dev = {"id": "NODE-RTU", "protocol": "opcua", "url": url, "mode": "poll", "poll_interval_s": 2.0,
           "timeout_s": 1.0,
           "points": [{"metric": "voltage_l1", "node_id": f"ns={ns};s=Feeder.VoltageL1", "unit": "V"},
                      {"metric": "current_l1", "node_id": f"ns={ns};s=Feeder.CurrentL1", "unit": "A"}],
           "security": {"policy": "Basic256Sha256", "mode": "Sign", "certificate": str(cert.certificate),
                        "private_key": str(cert.private_key)}}
    config = msgspec.convert({"identity": {"edge_id": "edge-t", "substation": "SUB-T"},
                              "hub": {"url": f"http://127.0.0.1:{free_port()}"}, "devices": [dev]}, FirmwareConfig)
    checks = asyncio.run(check_devices(config, wait_s=3.0))
    assert len(checks) == 2
    for c in checks:
        assert not c.ok
        assert f"the server at {url}" in c.error and "not trust this client's certificate" in c.error, c.error
        assert certificate_thumbprint(cert.certificate) in c.error
        assert "AssertionError" not in c.error.split("[")[0]
