"""Interoperability: the edge's OPC-UA sources against node-opcua, a server that is not asyncua.

node-opcua comes from the npm registry (``node-opcua-server``, pinned to a release that runs on
the Node.js 20 the machines have), installed by ``scripts/system-deps.sh`` into
``$SENTINEL_NODE_OPCUA_DIR`` (default ``~/.cache/smartgrid-sentinel/node-opcua``). Without it the
test is skipped, with the command that installs it; under CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaSource
from protocols.reading import QualityFlag
from protocols.sources import Update
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)

NODE_OPCUA_VERSION = "2.160.0"
NODE_OPCUA_DIR = Path(os.environ.get("SENTINEL_NODE_OPCUA_DIR",
                                     Path.home() / ".cache" / "smartgrid-sentinel" / "node-opcua"))

SERVER_JS = r"""
// A node-opcua server for the interoperability test: a feeder whose voltage changes every 100 ms,
// a current that does not, and a sensor that is broken (BadSensorFailure).
const os = require("os");
const path = require("path");
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { Variant, DataType } = require("node-opcua-variant");
const { DataValue } = require("node-opcua-data-value");
const { StatusCodes } = require("node-opcua-status-code");

(async () => {
  const port = parseInt(process.argv[2], 10);
  const pki = process.argv[3];
  const serverCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "PKI"),
                                                                 automaticallyAcceptUnknownCertificate: true });
  const userCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "UserPKI") });
  const server = new OPCUAServer({ port, hostname: "127.0.0.1", resourcePath: "/sentinel",
                                   serverCertificateManager, userCertificateManager,
                                   buildInfo: { productName: "sentinel-interop" } });
  await server.initialize();
  const space = server.engine.addressSpace;
  const ns = space.getOwnNamespace();
  const feeder = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "Feeder" });
  const add = (name) => ns.addVariable({ componentOf: feeder, browseName: name, nodeId: "s=Feeder." + name,
                                         dataType: "Double", minimumSamplingInterval: 50 });
  const voltage = add("VoltageL1"), current = add("CurrentL1"), broken = add("Temperature");
  let v = 11000.0;
  const double = (x) => new Variant({ dataType: DataType.Double, value: x });
  voltage.setValueFromSource(double(v));
  current.setValueFromSource(double(312.5));
  broken.setValueFromSource(double(0.0), StatusCodes.BadSensorFailure);
  setInterval(() => { v += 1.0; voltage.setValueFromSource(double(v)); }, 100);
  await server.start();
  console.log("READY ns=" + ns.index);
})().catch((err) => { console.error(err); process.exit(1); });
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(reason: str) -> None:
    hint = (f"{reason}; install with: npm install --prefix {NODE_OPCUA_DIR} node-opcua-server@{NODE_OPCUA_VERSION} "
            "(scripts/system-deps.sh does)")
    if _in_ci():
        pytest.fail(hint)
    pytest.skip(hint)


@pytest.fixture(scope="module")
def node_opcua(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A running node-opcua server: (url, its namespace index)."""
    node = shutil.which("node")
    if node is None:
        _missing("Node.js is not installed")
    if not (NODE_OPCUA_DIR / "node_modules" / "node-opcua-server").is_dir():
        _missing(f"node-opcua-server is not installed in {NODE_OPCUA_DIR}")
    work = tmp_path_factory.mktemp("node-opcua")
    script = work / "server.js"
    script.write_text(SERVER_JS)
    port = free_port()
    env = {**os.environ, "NODE_PATH": str(NODE_OPCUA_DIR / "node_modules")}
    proc = subprocess.Popen([node, str(script), str(port), str(work)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=work)
    try:
        deadline = time.monotonic() + 40
        ns = None
        lines: list[str] = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("READY ns="):
                ns = int(line.split("=", 1)[1])
                break
        if ns is None:
            pytest.fail("node-opcua server did not start:\n" + "".join(lines[-30:]))
        yield f"opc.tcp://127.0.0.1:{port}/sentinel", ns
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _device(url: str, ns: int, **kw: object) -> OpcUaDevice:
    points = [
        {"metric": "voltage_l1", "node_id": f"ns={ns};s=Feeder.VoltageL1", "unit": "kV", "scale": 0.001},
        {"metric": "current_l1", "browse_path": f"0:Objects/{ns}:Feeder/{ns}:CurrentL1", "unit": "A"},
        {"metric": "temperature", "node_id": f"ns={ns};s=Feeder.Temperature", "unit": "degC"},
        {"metric": "ghost", "node_id": f"ns={ns};s=Feeder.Nope"},
    ]
    return msgspec.convert({"id": "NODE-RTU", "url": url, "points": points, **kw}, OpcUaDevice)


def test_subscribes_to_a_node_opcua_server(node_opcua: tuple[str, int]) -> None:
    url, ns = node_opcua
    src = OpcUaSource(_device(url, ns, publishing_interval_s=0.1))

    async def main() -> list[Update]:
        updates: list[Update] = []
        try:
            async with asyncio.timeout(15):
                async for u in src.stream():
                    updates.append(u)
                    if sum(0 in u.index.tolist() for u in updates) >= 6:
                        break
        finally:
            await src.close()
        return updates

    updates = asyncio.run(main())
    latest: dict[int, tuple[float, int]] = {}
    volts = []
    for u in updates:
        for t, i, v, f in zip(u.ts, u.index.tolist(), u.values, u.flags):
            latest[i] = (float(v), int(f))
            if i == 0:
                volts.append((float(t), float(v)))
    assert latest[1] == (312.5, 0)  # the browse path resolved on node-opcua's address space
    assert math.isnan(latest[2][0]) and latest[2][1] == QualityFlag.INVALID  # BadSensorFailure
    assert math.isnan(latest[3][0]) and latest[3][1] == QualityFlag.INVALID  # BadNodeIdUnknown at subscribe
    values = [v for _, v in volts]
    assert len(values) >= 6 and all(np.diff(values) > 0), values  # the voltage goes up 1 V per 100 ms
    assert all(abs(t - time.time()) < 30 for t, _ in volts)  # server timestamps, on our clock


def test_polls_a_node_opcua_server(node_opcua: tuple[str, int]) -> None:
    url, ns = node_opcua
    src = OpcUaSource(_device(url, ns, mode="poll", poll_interval_s=1.0, timeout_s=0.5))

    async def main() -> tuple[np.ndarray, np.ndarray]:
        try:
            return await src.read()
        finally:
            await src.close()

    values, flags = asyncio.run(main())
    assert 11.0 <= values[0] < 12.0 and values[1] == 312.5
    assert flags.tolist() == [0, 0, int(QualityFlag.INVALID), int(QualityFlag.INVALID)]


def test_sign_and_encrypt_with_node_opcua(node_opcua: tuple[str, int], tmp_path: Path) -> None:
    """Our certificates (made with cryptography) and Basic256Sha256 as another stack implements it."""
    from simulator.opcua_server import make_certificate

    url, ns = node_opcua
    cert = make_certificate(tmp_path, "edge", "urn:smartgrid-sentinel:edge:interop")
    security = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": str(cert.certificate),
                "private_key": str(cert.private_key)}
    src = OpcUaSource(_device(url, ns, mode="poll", poll_interval_s=1.0, timeout_s=0.5, security=security))

    async def main() -> tuple[np.ndarray, np.ndarray, str]:
        try:
            values, flags = await src.read()
            assert src._session is not None
            return values, flags, src._session.client.security_policy.Mode.name
        finally:
            await src.close()

    values, flags, mode = asyncio.run(main())
    assert mode == "SignAndEncrypt" and values[1] == 312.5 and flags[:2].tolist() == [0, 0]
