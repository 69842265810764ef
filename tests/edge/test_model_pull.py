"""Model shipping: the hub serves its registry; the edge pulls, verifies, swaps, and refuses tampering."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import msgspec
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import TestClient

from edge.daemon import EdgeDaemon
from edge.status import scoring_line
from hub.app import create_app
from hub.server import HubServer
from hub.settings import Settings
from tests.support.hub_auth import ADMIN_KEY, edge_headers, provision_edge
from hub.storage import open_storage
from models.registry import ONNX_FILE, Registry
from models.signing import public_pem
from protocols.config import load_config
from simulator import Simulation
from tests.conftest import CONFIGS, free_port

pytestmark = pytest.mark.timeout(180)

NAME = "feeder-voltage"


@pytest.fixture(scope="module")
def exported():
    """A small IsolationForest on three-phase 11 kV windows, exported to ONNX (trained once)."""
    from models.export import export_model
    from models.features import FeatureSpec, compute_features
    from models.manifest import TrainingData
    from models.train import train_model

    rng = np.random.default_rng(0)
    t = np.arange(1200)
    x3 = np.stack([11.0 + 0.05 * np.sin(2 * np.pi * t / 900) + rng.normal(scale=0.01, size=len(t))
                   for _ in range(3)], axis=1)
    spec = FeatureSpec.build(window=16, inputs=("voltage_l1", "voltage_l2", "voltage_l3"),
                             series_features=("mean", "std", "slope"))
    x = compute_features(x3, spec)[spec.window - 1:]
    trained = train_model(x, kind="isolation_forest", spec=spec, name=NAME,
                          training=TrainingData(start=None, end=None, rows=len(x), source="arrays"),
                          params={"n_estimators": 16})
    return export_model(trained)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "model.pub"
    path.write_bytes(public_pem(private.public_key()))
    monkeypatch.setenv("SENTINEL_MODEL_PUBLIC_KEY", str(path))
    return private


def test_the_hub_lists_and_serves_model_files(tmp_path: Path, exported, keys) -> None:
    reg = Registry(tmp_path / "models")
    reg.publish(exported, keys)
    reg.publish(exported, keys)
    reg.set_latest(NAME, 1)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", model_registry=str(tmp_path / "models"),
                        admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as client:
        assert client.get("/models").status_code == 401  # models are served to edges and people, not to anyone
        client.headers.update(edge_headers(client, "NRB-EDGE-01"))  # as an edge pulls them
        assert client.get("/models").json() == {"models": [{"name": NAME, "versions": [1, 2], "latest": 1}]}
        assert client.get(f"/models/{NAME}/latest").json() == {"name": NAME, "version": 1}
        files = reg.read_files(NAME, 2)
        assert client.get(f"/models/{NAME}/2/files/onnx").content == files.onnx
        assert client.get(f"/models/{NAME}/2/files/manifest").content == files.manifest
        assert client.get(f"/models/{NAME}/2/files/signature").content == files.signature
        assert client.get("/models/nope/latest").status_code == 404
        assert client.get(f"/models/{NAME}/9/files/onnx").status_code == 404
        assert client.get(f"/models/{NAME}/1/files/weights").status_code == 400


def _edge_config(hub_port: int, poll_s: float = 0.05):
    base = load_config(CONFIGS / "nairobi-s1.toml")
    port = free_port()
    devices = [msgspec.structs.replace(d, port=port, poll_interval_s=poll_s, timeout_s=poll_s * 0.8)
               for d in base.devices]
    hub = msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{hub_port}", sync_interval_s=0.3)
    scoring = msgspec.structs.replace(base.scoring, model=NAME, model_pull_interval_s=0.2)
    return msgspec.structs.replace(base, devices=devices, hub=hub, scoring=scoring)


async def _until(predicate, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_tampered_model_is_refused_and_scoring_goes_on_with_the_old_one(
        tmp_path: Path, exported, keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.models")
    reg = Registry(tmp_path / "models")
    reg.publish(exported, keys)
    hub_port = free_port()
    cfg = _edge_config(hub_port)
    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    settings = Settings(model_registry=str(reg.root))

    async def main():
        hub = HubServer(storage, hub_port, settings=settings)
        await hub.start()
        daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token=provision_edge(storage, cfg.identity.edge_id))
        try:
            async with Simulation([cfg], speed=20.0, tick_s=0.05) as sim:
                tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
                await _until(lambda: daemon.scoring.scorer.model is not None, 10, "model v1")
                assert daemon.scoring.scorer.model.label == f"{NAME} v1"
                # v2 is published, then its model file is altered on the hub's disk
                reg.publish(exported, keys)
                onnx = reg.root / NAME / "2" / ONNX_FILE
                data = bytearray(onnx.read_bytes())
                data[len(data) // 2] ^= 0xFF
                onnx.write_bytes(bytes(data))
                await _until(lambda: daemon.models.refused, 10, "the refusal")
                scored = daemon.scoring.readings_scored
                await asyncio.sleep(1.0)  # several more pulls of the same tampered version
                snapshot = daemon.status_snapshot()
                assert daemon.scoring.readings_scored > scored  # scoring goes on
                for t in reversed(tasks):
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return daemon, snapshot
        finally:
            await hub.stop()

    daemon, snapshot = asyncio.run(main())
    storage.close()
    scoring = snapshot["scoring"]
    assert scoring["model"] == f"{NAME} v1"  # still the old model
    assert daemon.scoring.scorer.model.label == f"{NAME} v1" and daemon.models.refused_version == 2
    assert "model.onnx does not match its signed manifest" in scoring["refused"]
    line = scoring_line(scoring)
    assert line.startswith("model refused: ") and f"(still scoring with {NAME} v1)" in line
    errors = [r for r in caplog.records if r.name == "edge.models" and r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # logged once, not once per pull
    assert "v2 refused" in errors[0].getMessage()


def test_a_model_without_a_public_key_is_refused(tmp_path: Path, exported, keys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTINEL_MODEL_PUBLIC_KEY")
    reg = Registry(tmp_path / "models")
    reg.publish(exported, keys)
    hub_port = free_port()
    cfg = _edge_config(hub_port)
    storage = open_storage("sqlite://")

    async def main():
        hub = HubServer(storage, hub_port, settings=Settings(model_registry=str(reg.root)))
        await hub.start()
        try:
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token=provision_edge(storage, cfg.identity.edge_id))
            assert await daemon.models.pull_once() is False
            await daemon.models.aclose()
            await daemon.sync.aclose()
            daemon.buffer.close()
            return daemon
        finally:
            await hub.stop()

    daemon = asyncio.run(main())
    assert daemon.scoring.scorer.model is None
    assert "$SENTINEL_MODEL_PUBLIC_KEY is not set" in daemon.models.refused


def test_model_updates_during_steady_polling_lose_no_reading(tmp_path: Path, exported, keys) -> None:
    reg = Registry(tmp_path / "models")
    reg.publish(exported, keys)
    hub_port = free_port()
    cfg = _edge_config(hub_port)
    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    buffer = tmp_path / "edge.db"

    async def main():
        hub = HubServer(storage, hub_port, settings=Settings(model_registry=str(reg.root)))
        await hub.start()
        daemon = EdgeDaemon(cfg, buffer_path=buffer, token=provision_edge(storage, cfg.identity.edge_id))
        try:
            async with Simulation([cfg], speed=20.0, tick_s=0.05) as sim:
                tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
                for version in (2, 3, 4):  # three updates while polling every 50 ms
                    await asyncio.sleep(1.0)
                    reg.publish(exported, keys)
                    await _until(lambda v=version: daemon.models.version == v, 10, f"model v{version}")
                await asyncio.sleep(1.0)
                for t in reversed(tasks):
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return daemon
        finally:
            await hub.stop()

    daemon = asyncio.run(main())
    points = {d.id: len(d.points) for d in cfg.devices}
    polled = sum(h.polls * points[d] for d, h in daemon.stats.devices.items())
    storage.close()
    hub_seqs = [seq for (seq,) in sqlite3.connect(tmp_path / "hub.db").execute("SELECT seq FROM readings")]
    db = sqlite3.connect(buffer)
    pending_seqs = {seq for (seq,) in db.execute("SELECT seq FROM readings")}
    (unscored,) = db.execute("SELECT count(*) - count(anomaly_score) FROM readings").fetchone()
    assert daemon.models.swaps == 4 and daemon.scoring.scorer.model.label == f"{NAME} v4"
    assert daemon.scoring.scorer.previous.label == f"{NAME} v3"  # kept for rollback
    assert polled > 1000
    assert daemon.stats.readings_buffered == polled
    # every polled reading is at the hub (once) or still buffered; both, when the cancel came between
    # the hub's commit and its ack reaching the edge (the edge sends it again; the hub keeps it once)
    assert len(hub_seqs) == len(set(hub_seqs))
    assert set(hub_seqs) | pending_seqs == set(range(1, polled + 1))
    assert unscored == 0 and daemon.scoring.readings_scored == polled


def test_a_verified_model_is_kept_on_disk_and_used_after_a_restart_without_the_hub(
        tmp_path: Path, exported, keys) -> None:
    reg = Registry(tmp_path / "models")
    reg.publish(exported, keys)
    reg.publish(exported, keys)
    hub_port = free_port()
    cfg = _edge_config(hub_port)
    buffer = tmp_path / "edge.db"

    def close(daemon: EdgeDaemon):
        async def _close():
            await daemon.models.aclose()
            await daemon.sync.aclose()
            daemon.buffer.close()
        return _close()

    async def first_run() -> None:
        storage = open_storage("sqlite://")
        hub = HubServer(storage, hub_port, settings=Settings(model_registry=str(reg.root)))
        await hub.start()
        try:
            daemon = EdgeDaemon(cfg, buffer_path=buffer, token=provision_edge(storage, cfg.identity.edge_id))
            assert await daemon.models.pull_once() is True
            await close(daemon)
        finally:
            await hub.stop()

    async def restart() -> EdgeDaemon:  # the hub is gone now
        daemon = EdgeDaemon(cfg, buffer_path=buffer)
        await daemon.models.load_cached()
        await close(daemon)
        return daemon

    asyncio.run(first_run())
    cached = tmp_path / "edge.db.models" / NAME
    assert sorted(p.name for p in cached.iterdir()) == ["2", "latest"]
    daemon = asyncio.run(restart())
    assert daemon.scoring.scorer.model.label == f"{NAME} v2" and daemon.models.version == 2
    onnx = cached / "2" / ONNX_FILE  # the copy on disk is altered while the edge is down
    onnx.write_bytes(onnx.read_bytes()[:-10])
    daemon = asyncio.run(restart())
    assert daemon.scoring.scorer.model is None
    assert "cached copy:" in daemon.models.refused and "does not match its signed manifest" in daemon.models.refused


def test_pointing_the_hubs_latest_back_rolls_the_edge_back(tmp_path: Path, exported, keys) -> None:
    reg = Registry(tmp_path / "models")
    reg.publish(exported, keys)
    reg.publish(exported, keys)
    hub_port = free_port()
    cfg = _edge_config(hub_port)

    async def main() -> list[str]:
        storage = open_storage("sqlite://")
        hub = HubServer(storage, hub_port, settings=Settings(model_registry=str(reg.root)))
        await hub.start()
        try:
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token=provision_edge(storage, cfg.identity.edge_id))
            seen = []
            assert await daemon.models.pull_once() is True
            seen.append(daemon.scoring.scorer.model.label)
            assert await daemon.models.pull_once() is False  # nothing new
            reg.set_latest(NAME, 1)
            assert await daemon.models.pull_once() is True
            seen.append(daemon.scoring.scorer.model.label)
            seen.append(daemon.scoring.scorer.previous.label)
            await daemon.models.aclose()
            await daemon.sync.aclose()
            daemon.buffer.close()
            return seen
        finally:
            await hub.stop()

    assert asyncio.run(main()) == [f"{NAME} v2", f"{NAME} v1", f"{NAME} v2"]


class _HostileModelHub:
    """``GET /models/...`` on 127.0.0.1 answered from ``answers`` (path -> raw HTTP head and body)."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.port = 0

    async def __aenter__(self) -> _HostileModelHub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            path = head.split(" ", 2)[1]
            writer.write(self.answers.get(path, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _json_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body), body)


@pytest.mark.parametrize(("latest", "files", "error"), [
    (b'{"name": "%s", "version": 1000000000000}', {}, "Expected `int` <= 999999999"),
    (b'{"name": "other-model", "version": 2}', {}, "not 'NAME'"),
    (b'{"name": "%s", "version": 2', {}, "truncated"),
    (b'{"name": "%s", "version": 2}', {"onnx": b"HTTP/1.1 200 OK\r\nconnection: close\r\n"
                                              b"content-length: 1000000000000\r\n\r\nonnx..."}, "bytes long"),
], ids=["version-out-of-range", "another-model", "truncated-json", "a-terabyte-model"])
def test_a_hostile_model_hub_never_stops_the_puller_nor_fills_its_memory(tmp_path: Path, keys, latest: bytes,
                                                                          files: dict, error: str) -> None:
    async def main() -> None:
        async with _HostileModelHub() as hub:
            hub.answers[f"/models/{NAME}/latest"] = _json_answer(latest.replace(b"%s", NAME.encode()))
            for kind, raw in files.items():
                hub.answers[f"/models/{NAME}/2/files/{kind}"] = raw
            cfg = _edge_config(hub.port)
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token="sge_test")
            task = asyncio.create_task(daemon.models.run())
            try:
                await _until(lambda: daemon.models.last_error != "", 10, "the puller to report the hub's answer")
                await asyncio.sleep(0.5)  # it keeps asking (model_pull_interval_s is 0.2 s)
                assert not task.done(), task
                assert daemon.models.version is None and daemon.models.swaps == 0
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await daemon.models.aclose()
                await daemon.sync.aclose()
                daemon.buffer.close()
        assert error.replace("NAME", NAME) in daemon.models.last_error, daemon.models.last_error

    asyncio.run(main())
    cache = tmp_path / "edge.db.models"
    assert not cache.exists() or not any(cache.rglob("*.onnx"))
