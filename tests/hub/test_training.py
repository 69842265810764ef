"""Training at the hub from stored readings: the CLI's --from-database and POST /retrain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import TestClient

from hub.app import create_app
from hub.settings import Settings
from tests.support.hub_auth import ADMIN_KEY, as_admin, edge_headers
from hub.storage import open_storage
from models.registry import Registry
from models.signing import generate_keypair
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode
from sentinel_cli.main import main as sentinel

pytestmark = pytest.mark.timeout(180)

T0 = datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC)
N = 3000
STEPS = [(600, 660), (1500, 1560), (2400, 2460)]  # seconds after T0 where voltage_l1 steps up 0.3 kV


def _readings() -> list[Reading]:
    rng = np.random.default_rng(0)
    v = 11.0 + rng.normal(scale=0.01, size=N)
    for a, b in STEPS:
        v[a:b] += 0.3
    return [Reading(ts=T0 + timedelta(seconds=i), substation="S1", device_id="FEEDER-F12", metric="voltage_l1",
                    value=float(v[i]), unit="kV") for i in range(N)]


def _interval(a: int, b: int, label: str) -> dict:
    return {"device_id": "FEEDER-F12", "metric": "voltage_l1", "label": label,
            "start": (T0 + timedelta(seconds=a)).isoformat(), "end": (T0 + timedelta(seconds=b)).isoformat()}


@pytest.fixture
def signing_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    private_pem, _ = generate_keypair()
    monkeypatch.setenv("SENTINEL_MODEL_SIGNING_KEY", private_pem.decode())
    path = tmp_path / "signing.pem"
    path.write_bytes(private_pem)
    return path


@pytest.fixture
def hub_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    storage = open_storage(url)
    storage.insert_readings(_readings(), source="http")
    storage.close()
    return url


@pytest.fixture
def client(hub_db: str, tmp_path: Path, signing_key: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=hub_db, model_registry=str(tmp_path / "models"), admin_key=ADMIN_KEY)
    with TestClient(create_app(settings)) as c:
        yield as_admin(c)


def test_models_train_from_database_publishes_a_signed_model(hub_db: str, tmp_path: Path, signing_key: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "models"
    code = sentinel(["models", "train", "--from-database", hub_db, "--name", "feeder-if", "--metric", "voltage_l1",
                     "--device", "FEEDER-F12", "--registry", str(registry), "--signing-key", str(signing_key),
                     "--end", (T0 + timedelta(seconds=550)).isoformat()])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "published feeder-if v1" in out.out and "read 550 readings" in out.err
    entries = Registry(registry).entries()  # no public key: listed without verifying
    assert [(e.name, e.version, e.latest) for e in entries] == [("feeder-if", 1, True)]
    m = entries[0].manifest
    assert m.feature_spec.inputs == ("voltage_l1",) and m.training.series == ("FEEDER-F12",)
    assert m.training.end is not None and m.training.end < (T0 + timedelta(seconds=550)).isoformat()
    assert sentinel(["models", "train", "--from-database", hub_db, "--name", "x", "--registry", str(registry),
                     "--signing-key", str(signing_key)]) == 2
    assert "--metric" in capsys.readouterr().err


def test_retrain_with_feedback_publishes_versions_and_reports_the_accuracy_change(client: TestClient) -> None:
    first = client.post("/retrain", json={"method": "feedback", "incidents": [
        _interval(*STEPS[0], "step"), _interval(100, 200, "normal")]})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["success"] is True and body["model_version"] == 1 and body["model"] == "grid-risk"
    assert body["kind"] == "risk_classifier" and body["accuracy_improvement"] is None
    assert 0.5 <= body["accuracy"] <= 1.0 and body["retraining_time_ms"] > 0 and body["holdout_windows"] > 0
    second = client.post("/retrain", json={"method": "feedback", "incidents": [
        _interval(*s, "step") for s in STEPS] + [_interval(100, 200, "normal")]})
    assert second.status_code == 200, second.text
    body2 = second.json()
    assert body2["model_version"] == 2
    assert body2["accuracy_improvement"] == pytest.approx(body2["accuracy"] - body2["previous_accuracy"], abs=1e-5)
    assert body2["accuracy"] >= 0.9
    assert body2["accuracy_improvement"] > 0  # v1 had learnt one step of three and missed the others
    models = client.get("/models").json()["models"]
    assert models == [{"name": "grid-risk", "versions": [1, 2], "latest": 2}]


def test_retrain_from_database_trains_the_unsupervised_model(client: TestClient) -> None:
    r = client.post("/retrain", json={"method": "from_database", "incidents": [_interval(*s, "step") for s in STEPS]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "grid-anomaly" and body["kind"] == "isolation_forest" and body["model_version"] == 1


def test_retrain_by_incident_id(client: TestClient) -> None:
    ev = Event(ts=T0 + timedelta(seconds=1500), substation="S1", device_id="FEEDER-F12", metric="voltage_l1",
               type="anomaly_step", state="raised", severity="WARNING", value=11.3, unit="kV", description="step")
    batch = SyncBatch(edge_id="e1", substation="S1", sent_at=T0, events=EventRun(first_seq=1, items=[ev]),
                      readings=ReadingRun(first_seq=1, items=[_readings()[0]]))
    assert client.post("/edge/sync", content=encode(batch), headers=edge_headers(client, batch.edge_id)).status_code == 200
    (incident,) = client.get("/incidents").json()["incidents"]
    assert incident["agent"] == "anomaly_detector"
    r = client.post("/retrain", json={"method": "feedback", "incidents": [
        {"incident_id": incident["id"], "label": "step"}, _interval(100, 200, "normal")]})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"method": "guess", "incidents": []}, "method"),
    ({"method": "feedback", "incidents": []}, "incidents"),
    ({"method": "feedback", "incidents": [{"label": "step", "device_id": "FEEDER-F12"}]}, "incidents[0].metric"),
    ({"method": "feedback", "incidents": [{"incident_id": "INC-2026-999999", "label": "step"}]},
     "incidents[0].incident_id"),
    ({"method": "feedback", "incidents": [{"label": "step"} | _interval(10, 5, "step")]}, "incidents[0].end"),
    ({"method": "feedback", "incidents": [_interval(100, 200, "normal")]}, "incidents"),
])
def test_retrain_names_the_bad_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/retrain", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"], r.json()


@pytest.mark.postgres
def test_train_from_database_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    from hub.modelship.training import train_from_database

    storage = open_storage(postgres_url)
    try:
        storage.insert_readings(_readings()[:1000], source="http")
        private = Ed25519PrivateKey.generate()
        outcome = train_from_database(storage, Registry(tmp_path / "models"), private, name="pg-if",
                                      metrics=["voltage_l1"], devices=["FEEDER-F12"])
    finally:
        storage.close()
    assert outcome.readings == 1000 and outcome.manifest.label == "pg-if v1"
    assert Registry(tmp_path / "models", private.public_key()).load("pg-if").label == "pg-if v1"


@pytest.mark.parametrize("name", ["../../escaped", "../escaped", "/tmp/escaped-abs", "grid\x00risk", "gr\u0456d-risk",
                                  "Grid-Risk", "a..b", "x" * 65, "grid-risk\n"])
def test_retrain_refuses_a_model_name_that_is_not_a_name_and_writes_nothing(client: TestClient, tmp_path: Path,
                                                                            name: str) -> None:
    registry = tmp_path / "models"
    body = {"method": "feedback", "model": name,
            "incidents": [_interval(*s, "step") for s in STEPS] + [_interval(100, 200, "normal")]}
    r = client.post("/retrain", json=body)
    assert r.status_code == 400, r.text
    assert "model" in r.json()["detail"], r.json()
    assert not (registry / name.replace("\x00", "")).resolve().exists()
    assert not registry.exists() or list(registry.iterdir()) == []
    assert client.get("/models").json() == {"models": []}


@pytest.mark.parametrize(("body", "field"), [
    ({"window": 10**9}, "window"),
    ({"window": 1}, "window"),
    ({"sample_period_s": -1.0}, "sample_period_s"),
    ({"metrics": ["voltage_l1"] * 65}, "metrics"),
])
def test_retrain_bounds_its_numbers(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/retrain", json={"method": "feedback", "incidents": [_interval(*STEPS[0], "step")], **body})
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"], r.json()
