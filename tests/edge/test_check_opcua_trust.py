"""`sentinel edge check` against OPC-UA servers that refuse this edge: an asyncua server that does not
trust its certificate, a pinned server certificate that is not the endpoint's, and a server that
hangs up while the secure channel is being opened (what node-opcua does with an untrusted client)."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from edge.check import PointCheck, check_devices
from protocols.config import FirmwareConfig
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import certificate_thumbprint
from simulator.opcua_server import CertificatePair, OpcUaEndpoint, make_certificate
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]

POINTS = [{"metric": "voltage_l1", "node_id": "ns=2;s=RTU.voltage_l1", "unit": "kV", "nominal": 11.0},
          {"metric": "frequency", "node_id": "ns=2;s=RTU.frequency", "unit": "Hz"}]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificatePair]:
    d = tmp_path_factory.mktemp("certs")
    return {"edge": make_certificate(d, "edge", "urn:smartgrid-sentinel:edge:test"),
            "rogue": make_certificate(d, "rogue", "urn:rogue:client"),
            "other-server": make_certificate(d, "other-server", "urn:other:server")}


def config(url: str, cert: CertificatePair, **security: str) -> FirmwareConfig:
    dev = {"id": "RTU", "protocol": "opcua", "url": url, "mode": "poll", "poll_interval_s": 2.0, "points": POINTS,
           "security": {"policy": "Basic256Sha256", "mode": "Sign", "certificate": str(cert.certificate),
                        "private_key": str(cert.private_key), **security}}
    return msgspec.convert({"identity": {"edge_id": "edge-t", "substation": "SUB-T"},
                            "hub": {"url": f"http://127.0.0.1:{free_port()}"}, "devices": [dev]}, FirmwareConfig)


async def with_server(certs: dict[str, CertificatePair], run, trusted: Path | None = None  # noqa: ANN001
                      ) -> tuple[list[PointCheck], str, str]:
    """Run ``run(url)`` against a server trusting only the edge's certificate: (its result, the
    server's url, the SHA-1 thumbprint of the certificate it offers)."""
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    served = msgspec.convert({"id": "RTU", "url": url, "points": POINTS}, OpcUaDevice)
    endpoint = OpcUaEndpoint(url, [served], security=[("Basic256Sha256", "Sign")],
                             trusted_clients=[trusted or certs["edge"].certificate], anonymous=True)
    async with endpoint:
        await endpoint.write("RTU", {"voltage_l1": 11.04, "frequency": 50.01})
        assert endpoint.certificate is not None
        return await run(url), url, certificate_thumbprint(endpoint.certificate.certificate)


def test_trusted_edge_reads_and_an_untrusted_one_is_told_plainly(certs: dict[str, CertificatePair]) -> None:
    async def run(url: str) -> list[PointCheck]:
        good = await check_devices(config(url, certs["edge"]), wait_s=3.0)
        assert all(c.ok for c in good), good
        return await check_devices(config(url, certs["rogue"]), wait_s=3.0)

    checks, url, _ = asyncio.run(with_server(certs, run))
    thumb = certificate_thumbprint(certs["rogue"].certificate)
    assert len(checks) == 2
    for c in checks:
        assert not c.ok
        assert f"the server at {url} does not trust this client's certificate" in c.error, c.error
        assert thumb in c.error and "add it to the server's trusted certificates" in c.error
        assert "AssertionError" not in c.error


def test_a_pinned_server_certificate_that_is_not_the_endpoints_names_both(certs: dict[str, CertificatePair]) -> None:
    pinned = certs["other-server"].certificate

    async def run(url: str) -> list[PointCheck]:
        return await check_devices(config(url, certs["edge"], server_certificate=str(pinned)), wait_s=3.0)

    checks, _, offered = asyncio.run(with_server(certs, run))
    for c in checks:
        assert not c.ok and "does not match" in c.error, c.error
        assert certificate_thumbprint(pinned) in c.error and offered in c.error


def test_a_server_hanging_up_on_the_secure_channel_is_reported_as_distrust(certs: dict[str, CertificatePair]) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer Hello with Acknowledge, then close on OpenSecureChannel."""
        head = await reader.readexactly(8)
        await reader.readexactly(struct.unpack("<I", head[4:])[0] - 8)
        writer.write(b"ACKF" + struct.pack("<IIIIII", 28, 0, 65535, 65535, 0, 0))
        await writer.drain()
        head = await reader.readexactly(8)
        await reader.readexactly(struct.unpack("<I", head[4:])[0] - 8)
        writer.close()

    async def main() -> tuple[list[PointCheck], str]:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        url = f"opc.tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            return await check_devices(config(url, certs["edge"]), wait_s=3.0), url

    checks, url = asyncio.run(main())
    for c in checks:
        assert f"the server at {url} most likely does not trust this client's certificate" in c.error, c.error
        assert certificate_thumbprint(Path(certs["edge"].certificate)) in c.error


def test_edge_cert_makes_a_certificate_a_server_accepts(tmp_path: Path, certs: dict[str, CertificatePair]) -> None:
    from cryptography import x509

    out = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "edge", "cert", "--out-dir", str(tmp_path),
                          "--application-uri", "urn:acme:sub-12:edge", "--host", "127.0.0.1", "--csr"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    der = tmp_path / "edge.der"
    cert = x509.load_der_x509_certificate(der.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:acme:sub-12:edge"]
    assert certificate_thumbprint(der) in out.stdout
    assert (tmp_path / "edge-key.pem").stat().st_mode & 0o077 == 0
    assert x509.load_pem_x509_csr((tmp_path / "edge.csr").read_bytes()).is_signature_valid
    again = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "edge", "cert", "--out-dir", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr  # never overwrites a key by accident
    made = CertificatePair(der, tmp_path / "edge-key.pem", "urn:acme:sub-12:edge")

    async def run(url: str) -> list[PointCheck]:
        return await check_devices(config(url, made), wait_s=3.0)

    checks, _, _ = asyncio.run(with_server(certs, run, trusted=der))
    assert all(c.ok for c in checks), checks
    assert {c.metric: c.value for c in checks} == {"voltage_l1": pytest.approx(11.04), "frequency": pytest.approx(50.01)}
