"""The edge talks to a real hub over HTTPS: it syncs with the right CA (or the hub's certificate as
the only anchor) and the right pin, and refuses, keeping its data, with another CA or a wrong pin.
Certificates are made in the test's directory (tests/support/tls.py)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import msgspec
import pytest

from edge.buffer import Buffer
from edge.sync import HubFault, SyncLoop
from hub.server import HubServer
from hub.settings import Settings
from hub.storage.sqlite import SQLiteStorage
from protocols.config import ConfigError, FirmwareConfig, load_config
from tests.conftest import CONFIGS, free_port
from tests.support.hub_auth import provision_edge
from tests.support.tls import Pki, sha256

pytestmark = pytest.mark.timeout(120)

SUB = "NAIROBI-S1"
EDGE = "edge-nairobi-01"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def edge_config(url: str, **tls: str) -> FirmwareConfig:
    cfg = load_config(CONFIGS / "nairobi-s1.toml")
    hub = msgspec.structs.replace(cfg.hub, url=url, timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2, **tls)
    return msgspec.structs.replace(cfg, hub=hub)


def rows(n: int, start: int = 0) -> list[tuple]:
    return [(1_700_000_000.0 + start + i, "FEEDER-F12", "voltage_l1", 11.0, "kV", 1.0, 0) for i in range(n)]


# -- against a real hub ----------------------------------------------------------------------------


def test_the_edge_syncs_over_https_only_with_the_right_anchor_and_pin(pki: Pki, tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    token = provision_edge(storage, EDGE, SUB)
    buf = Buffer(tmp_path / "edge.db", SUB)
    port = free_port()

    async def attempt(cfg: FirmwareConfig) -> HubFault | int | None:
        sync = SyncLoop(cfg, buf, token=token)
        try:
            return await sync.sync_once()
        except HubFault as fault:
            assert sync.stats.faults["tls"] == 1 and sync.stats.hub_faults == 1
            return fault
        finally:
            await sync.aclose()

    async def main() -> None:
        hub = HubServer(storage, port, settings=Settings(agents=None), ssl_certfile=str(pki.hub_cert_file),
                        ssl_keyfile=str(pki.hub_key_file))
        assert hub.url == f"https://127.0.0.1:{port}"
        await hub.start()
        try:
            url = hub.url
            buf.append(rows(10))
            # the right CA: synced
            assert await attempt(edge_config(url, ca_file=str(pki.ca_file))) == 10
            assert storage.reading_counts() == {SUB: 10}

            buf.append(rows(5, start=10))
            refused = [
                ("another CA", edge_config(url, ca_file=str(pki.other_ca_file)), "certificate"),
                ("the system's CAs", edge_config(url), "certificate"),
                ("a wrong pin", edge_config(url, ca_file=str(pki.ca_file), cert_sha256=sha256(pki.other_cert)),
                 "pins"),
                ("localhost's name, the right pin, another CA",
                 edge_config(f"https://localhost:{port}", ca_file=str(pki.other_ca_file),
                             cert_sha256=sha256(pki.hub_cert)), "certificate"),
            ]
            for what, cfg, why in refused:
                fault = await attempt(cfg)
                assert isinstance(fault, HubFault) and fault.kind == "tls", (what, fault)
                assert why in str(fault), (what, str(fault))
                readings, _ = buf.pending(100)
                assert (readings.first_seq, readings.last_seq) == (11, 15), what  # the data stays here
            assert storage.reading_counts() == {SUB: 10}  # and nothing reached the hub

            # the right pin (as openssl prints it: colons, capitals), over localhost's name too
            colons = ":".join(sha256(pki.hub_cert)[i:i + 2] for i in range(0, 64, 2)).upper()
            assert await attempt(edge_config(f"https://localhost:{port}", ca_file=str(pki.ca_file),
                                             cert_sha256=colons)) == 5
            # the hub's own certificate as the only anchor (it is not a CA: pinned by ca_file alone)
            buf.append(rows(2, start=15))
            assert await attempt(edge_config(url, ca_file=str(pki.hub_cert_file))) == 2
        finally:
            await hub.stop()

    try:
        asyncio.run(main())
        assert storage.reading_counts() == {SUB: 17}
        assert buf.stats().readings_pending == 0
    finally:
        buf.close()
        storage.close()


def test_a_wrong_pin_is_found_before_a_byte_of_the_request_is_sent(pki: Pki, tmp_path: Path) -> None:
    """A TLS server with a certificate the edge's CA trusts, but not the pinned one: the edge must
    hang up right after the handshake, before its token or its readings cross."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await asyncio.wait_for(reader.read(65536), 5))  # b"": closed, nothing sent
        except TimeoutError:
            received.append(b"(still open)")
        except (ConnectionError, ssl.SSLError):  # closed without TLS's goodbye: nothing sent either
            received.append(b"")
        writer.close()

    async def main() -> HubFault:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.hub_cert_file, pki.hub_key_file)
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        buf = Buffer(tmp_path / "edge.db", SUB)
        buf.append(rows(3))
        sync = SyncLoop(edge_config(f"https://127.0.0.1:{port}", ca_file=str(pki.ca_file),
                                    cert_sha256=sha256(pki.other_cert)), buf, token="s3cret-edge-token")
        try:
            with pytest.raises(HubFault) as caught:
                await sync.sync_once()
            for _ in range(50):
                if received:
                    break
                await asyncio.sleep(0.05)
            assert buf.stats().readings_pending == 3
            return caught.value
        finally:
            await sync.aclose()
            buf.close()
            server.close()
            await server.wait_closed()

    fault = asyncio.run(main())
    assert fault.kind == "tls" and "pins" in str(fault)
    assert received == [b""], received  # the connection closed with nothing sent over it


def test_a_ca_file_that_cannot_be_used_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "edge.db", SUB)
    try:
        with pytest.raises(ConfigError, match=r"hub\.ca_file: cannot load .*nope\.pem"):
            SyncLoop(edge_config("https://127.0.0.1:1", ca_file=str(tmp_path / "nope.pem")), buf)
        (tmp_path / "junk.pem").write_text("not a certificate\n")
        with pytest.raises(ConfigError, match=r"hub\.ca_file: cannot load .*junk\.pem"):
            SyncLoop(edge_config("https://127.0.0.1:1", ca_file=str(tmp_path / "junk.pem")), buf)
    finally:
        buf.close()


def test_plain_http_to_another_machine_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    buf = Buffer(tmp_path / "edge.db", SUB)

    async def build(url: str) -> None:
        await SyncLoop(edge_config(url), buf).aclose()

    try:
        asyncio.run(build("http://127.0.0.1:8000"))
        asyncio.run(build("http://localhost:8000"))
        assert "plain http://" not in caplog.text
        asyncio.run(build("http://hub.example.net:8000"))
        assert "hub http://hub.example.net:8000 is plain http://" in caplog.text
    finally:
        buf.close()
