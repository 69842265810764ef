"""An edge that scores with a model pulled from the hub never imports ``cryptography``
(docs/edge-footprint.md: 6.7 MB resident for as long as it runs). It verifies the model's
signature, and a remote config's, in a short-lived child process (models/verify_signature.py),
and still refuses a tampered model and a config the hub's key did not sign.

The edge runs in a process of its own (this one has imported cryptography to sign the model);
the hub runs here, on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hub.fleet.configs import ConfigStore
from hub.server import HubServer
from hub.settings import Settings
from hub.storage import open_storage
from models.registry import ONNX_FILE, Registry
from models.signing import generate_keypair, load_private_key, sign
from tests.conftest import free_port
from tests.support.hub_auth import provision_edge

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
NAME = "lean-voltage"
EDGE = "edge-lean-model"

# the edge: runs until its model v1 is in use, says so, then (told to go on) until v2 is refused
RUN = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from edge.daemon import EdgeDaemon
    from protocols.config import load_config

    config, buffer, token = sys.argv[1:4]

    async def until(predicate, what):
        for _ in range(600):
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    async def main() -> dict:
        daemon = EdgeDaemon(load_config(config), buffer_path=buffer, token=token, config_path=Path(config))
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.models.version == 1, "model v1")
        print("in use", daemon.scoring.scorer.model.label, flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the test offers the tampered v2
        await until(lambda: daemon.models.refused_version == 2, "v2 refused")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return {"model": daemon.scoring.scorer.model.label, "refused": daemon.models.refused}

    out = asyncio.run(main())
    out["modules"] = sorted(sys.modules)
    print(json.dumps(out), flush=True)
""")


def _exported():
    """A small IsolationForest on three-phase 11 kV windows, exported to ONNX."""
    from models.export import export_model
    from models.features import FeatureSpec, compute_features
    from models.manifest import TrainingData
    from models.train import train_model

    rng = np.random.default_rng(0)
    t = np.arange(600)
    x3 = np.stack([11.0 + 0.05 * np.sin(2 * np.pi * t / 300) + rng.normal(scale=0.01, size=len(t))
                   for _ in range(3)], axis=1)
    spec = FeatureSpec.build(window=16, inputs=("voltage_l1", "voltage_l2", "voltage_l3"),
                             series_features=("mean", "std"))
    x = compute_features(x3, spec)[spec.window - 1:]
    trained = train_model(x, kind="isolation_forest", spec=spec, name=NAME,
                          training=TrainingData(start=None, end=None, rows=len(x), source="arrays"),
                          params={"n_estimators": 8})
    return export_model(trained)


def _config(hub_port: int) -> str:
    points = ", ".join(f'{{ metric = "voltage_l{i}", unit = "kV", address = {100 + 2 * i}, data_type = "float32" }}'
                       for i in (1, 2, 3))
    return textwrap.dedent(f"""
        [identity]
        edge_id = "{EDGE}"
        substation = "LEAN"
        [hub]
        url = "http://127.0.0.1:{hub_port}"
        config_pull_interval_s = 0.2
        [scoring]
        model = "{NAME}"
        model_pull_interval_s = 0.2
        [[devices]]
        id = "meter"
        protocol = "modbus_tcp"
        host = "127.0.0.1"
        port = {free_port()}
        unit_id = 1
        poll_interval_s = 0.5
        timeout_s = 0.2
        points = [{points}]
    """)


def test_an_edge_with_a_model_verifies_it_without_importing_cryptography(tmp_path: Path) -> None:
    private_pem, public_pem = generate_keypair()
    (tmp_path / "model.key").write_bytes(private_pem)
    (tmp_path / "model.pub").write_bytes(public_pem)
    key = load_private_key(tmp_path / "model.key")
    reg = Registry(tmp_path / "models")
    exported = _exported()
    reg.publish(exported, key)
    reg.publish(exported, key)
    onnx = reg.root / NAME / "2" / ONNX_FILE  # v2 altered on the hub's disk after it was signed
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    reg.set_latest(NAME, 1)

    hub_port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(_config(hub_port))
    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    token = provision_edge(storage, EDGE)
    # a config for this edge signed by a key that is not the hub's: refused before it is tried
    body = config.read_text().replace("poll_interval_s = 0.5", "poll_interval_s = 0.4")
    ConfigStore(storage).put(EDGE, body, sign(_stranger_key(tmp_path), body.encode()).hex(), "test")
    env = {"SENTINEL_MODEL_PUBLIC_KEY": str(tmp_path / "model.pub")}

    async def main() -> tuple[str, dict]:
        hub = HubServer(storage, hub_port, settings=Settings(model_registry=str(reg.root)))
        await hub.start()
        edge = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RUN, str(config), str(tmp_path / "edge.db"), token, cwd=REPO,
            env={**os.environ, **env}, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            first = (await asyncio.wait_for(edge.stdout.readline(), 60)).decode().strip()
            for _ in range(200):  # the config pulled, its signature checked, the refusal told to the hub
                if ConfigStore(storage).history(EDGE)[0].status != "pending":
                    break
                await asyncio.sleep(0.05)
            reg.set_latest(NAME, 2)
            out, err = await asyncio.wait_for(edge.communicate(b"go\n"), 60)
            assert edge.returncode == 0, err.decode()[-3000:]
            return first, json.loads(out)
        finally:
            if edge.returncode is None:
                edge.kill()
                await edge.wait()
            await hub.stop()

    first, got = asyncio.run(main())
    config_status = ConfigStore(storage).history(EDGE)[0]
    storage.close()
    assert first == f"in use {NAME} v1"  # pulled, verified and loaded
    assert got["model"] == f"{NAME} v1"  # v2 refused: it goes on with v1
    assert "model.onnx does not match its signed manifest" in got["refused"], got["refused"]
    assert config_status.status == "refused", config_status
    assert config_status.reason.startswith(f"its signature does not verify with {tmp_path / 'model.pub'}"), \
        config_status.reason
    modules = set(got["modules"])
    assert sorted(m for m in modules if m.split(".")[0] == "cryptography") == []
    assert {"edge.models", "models.verify_signature", "onnxruntime"} <= modules


def _stranger_key(tmp_path: Path):
    private_pem, _ = generate_keypair()
    (tmp_path / "stranger.key").write_bytes(private_pem)
    return load_private_key(tmp_path / "stranger.key")
