"""The hub keeps its contract: schemathesis, every check, against a live hub on 127.0.0.1.

``/docs/openapi.json`` must describe every body, parameter and answer the hub really uses. A real
uvicorn server (SQLite in a temp dir, the agents running, a model signing key) is called as an
admin (``/edge/sync`` as an edge, with its own credential) in every phase: the document's examples,
coverage (boundaries, each constraint broken in turn, unexpected methods, missing credentials) and
fuzzing, one test per operation; then stateful sequences that follow the links between operations
(create, read, revoke, read again). Every check is on; a failure names the operation, the check and
a curl command that reproduces it.

Examples per operation and phase: ``SENTINEL_CONTRACT_EXAMPLES`` (default 50: under a minute here);
``make contract`` runs 500. ``SENTINEL_CONTRACT_SEED`` changes the seed (fixed by default, so a
failure in ``make test`` reproduces).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from litestar.testing import TestClient
from schemathesis.engine import Status, events, from_schema

from hub.app import create_app
from hub.auth import AuthStore
from hub.insights.orchestrator import OrchestratorSettings
from hub.settings import Settings
from hub.storage import Storage, open_storage
from models.signing import PRIVATE_KEY_ENV, generate_keypair
from tests.support.hub_auth import ADMIN_KEY, bearer, edge_headers
from tests.support.live_hub import LiveHub

EXAMPLES = int(os.environ.get("SENTINEL_CONTRACT_EXAMPLES", "50"))
SEED = int(os.environ.get("SENTINEL_CONTRACT_SEED", "20260301"))
EDGE_ID = "EDGE-CONTRACT"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")  # what a credential may be named
PLACEHOLDER = "contract-credential"  # in cases made before the hub runs; swapped when they are sent

# Rules JSON Schema cannot state, which these operations answer with a 400 naming the field (each
# written in the operation's 400): a schema-valid request may still be refused there. Elsewhere a
# 400 to a schema-valid request is a failure.
REFUSED_ON_MEANING = {
    "/edge/sync": "every item's substation is the batch's; an OT log entry's source is an IP address and it "
                  "carries its kind's fields",
    "/sensors/process": "a reading's value is physically possible for its metric and unit; its timestamp is "
                        "after the floor and not ahead of the hub's clock",
    "/agents/run": "`at` lies within the readings and OT logs held",
    "/retrain": "the incidents named are held, intervals end after they start, the data held has something to "
                "learn",
    "/ot-logs": "an entry's time is within range in UTC",
    "/export/readings": "`end` is after `start`",
    "/readings": "`end` is after `start` (and `start` not in the future when `end` is left to be now); raw covers "
                 "at most 7 days, a named bucket at most 10000 points; a point held by several substations in the "
                 "range needs `substation`",
    "/export/comtrade": "an incident sets the window: no `start` or `end` with it",
    "/compliance/en50160": "`end` is after `start`, at most 366 days on; a voltage far from every standard "
                           "system voltage needs `nominal`; a device held by several substations needs `substation`",
    "/webhooks": "the url names a host (and a port from 1 to 65535), and no user name or password",
    "/edges/{edge_id}/config": "the TOML is a firmware config the edge can use, for that edge, and the hub holds a "
                               "signing key",
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis's own list
# Repeatable query filters (``substation=S&substation=T``) are "array of strings, or null" in the
# document. Schemathesis's negative cases for them (``substation=false``, meant as a boolean) are
# plain strings once written into a query string, which the hub rightly accepts: its
# negative-data check is a false positive on these operations, so a 2xx counts as correct there.
STRING_QUERY_ARRAYS = ["/export/readings", "/readings/latest"]


def _document() -> dict[str, Any]:
    """The document the hub serves, built as the hub builds it (``test_the_hub_serves_this_document``
    holds the live hub to it). Loaded at import: schemathesis makes one test per operation."""
    return create_app(Settings(agents=None)).openapi_schema.to_schema()


def _schema(*phases: str, base_url: str | None = None) -> schemathesis.BaseSchema:
    """The document under test, with every check on and ``phases`` run."""
    return schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict({
        "seed": SEED,
        **({"base-url": base_url} if base_url else {}),
        "generation": {"max-examples": EXAMPLES, "database": "none"},
        "checks": {"enabled": True, "max_response_time": 30},  # seconds: a bound, not a benchmark
        "phases": {name: {"enabled": name in phases} for name in ("examples", "coverage", "fuzzing", "stateful")},
        "operations": [*({"include-path": path, "checks": {"positive_data_acceptance": {
            "expected-statuses": [*ACCEPTED, "400"]}}} for path in REFUSED_ON_MEANING),
                       *({"include-path": path, "checks": {"negative_data_rejection": {
                           "expected-statuses": ["2xx", "400", "401", "403", "404", "406", "422"]}}}
                         for path in STRING_QUERY_ARRAYS)],
    }))


class Credentials:
    """Who schemathesis calls as: an admin everywhere but ``/edge/sync``, where an edge sends its own
    batches (the credential of the batch's ``edge_id`` when it can be one). Sequences may revoke any
    credential, the admin's too: a revoked one is replaced, as an operator would."""

    def __init__(self, storage: Storage) -> None:
        self.store = AuthStore(storage)
        self.admin = ADMIN_KEY
        self.edges: dict[str, str] = {}

    def secret_for(self, case: schemathesis.Case) -> str:
        return self._edge(case.body) if case.operation.path == "/edge/sync" else self._admin()

    def _admin(self) -> str:
        if self.store.authenticate(self.admin) is None:
            self.admin = self.store.create_key("contract-admin", "admin", created_by="test").secret
        return self.admin

    def _edge(self, body: Any) -> str:
        edge_id = body.get("edge_id") if isinstance(body, dict) else None
        if not isinstance(edge_id, str) or not NAME.match(edge_id):
            edge_id = EDGE_ID
        secret = self.edges.get(edge_id)
        if secret is None or self.store.authenticate(secret) is None:
            secret = self.edges[edge_id] = self.store.add_edge(edge_id, created_by="test").secret
        return secret


def _authenticate(schema: schemathesis.BaseSchema, secret: Any) -> None:
    """Schemathesis authenticates every case except those testing a missing or wrong credential:
    with ``secret(case)``."""

    @schema.auth(refresh_interval=None, retry_on=[])
    class Bearer:
        def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
            return ""

        def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {secret(case)}"}


OPERATIONS = _schema("examples", "coverage", "fuzzing")
_authenticate(OPERATIONS, lambda case: PLACEHOLDER)  # some cases are made at collection, before the hub runs


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    root = tmp_path_factory.mktemp("contract")
    settings = Settings(database_url=f"sqlite:///{root / 'hub.db'}", admin_key=ADMIN_KEY,
                        model_registry=str(root / "models"), ingest_rate_per_s=0.0,
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))  # cycles only when asked
    storage = open_storage(settings.database_url)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PRIVATE_KEY_ENV, generate_keypair()[0].decode())  # /retrain signs what it trains
        try:
            with LiveHub(storage, settings) as live:
                _seed(live.url)
                yield live
        finally:
            storage.close()


@pytest.fixture(scope="module")
def credentials(hub: LiveHub) -> Credentials:
    return Credentials(hub.storage)


def _seed(url: str) -> None:
    """Something to read back: ten minutes of a feeder's voltage with a dip (an incident) and a step,
    a model trained on them (its files to fetch), an OT log entry."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    noise = random.Random(0)
    readings = [{"device_id": "FEEDER-F12", "sensor_type": "voltage", "timestamp": (t0 + timedelta(seconds=i)).isoformat(),
                 "value": 230.0 + noise.gauss(0, 0.5) + (8.0 if 200 <= i < 260 else 0.0) - (40.0 if i == 5 else 0.0)}
                for i in range(600)]
    step = {"device_id": "FEEDER-F12", "metric": "voltage", "label": "step",
            "start": (t0 + timedelta(seconds=200)).isoformat(), "end": (t0 + timedelta(seconds=260)).isoformat()}
    entry = {"ts": t0.isoformat(), "kind": "auth", "substation": "NAIROBI-S1", "device_id": "RTU-1",
             "result": "failure", "action": "login", "user": "eve", "source": "10.0.0.9"}
    with httpx.Client(base_url=url, headers=bearer(ADMIN_KEY), timeout=60) as client:
        assert client.post("/sensors/process", json={"sensor_readings": readings}).status_code == 200
        assert client.get("/incidents").json()["incidents"], "the seed raised no incident"
        trained = client.post("/retrain", json={"method": "from_database", "incidents": [step], "window": 8})
        assert trained.status_code == 200, trained.text
        assert client.post("/ot-logs", json=entry).status_code == 200


@OPERATIONS.parametrize()
def test_every_operation_keeps_the_contract(case: schemathesis.Case, hub: LiveHub, credentials: Credentials) -> None:
    if (case.headers or {}).get("Authorization") == f"Bearer {PLACEHOLDER}":
        case.headers["Authorization"] = f"Bearer {credentials.secret_for(case)}"
    case.call_and_validate(base_url=hub.url)


def test_sequences_of_operations_keep_the_contract(hub: LiveHub, credentials: Credentials) -> None:
    """Stateful: responses feed later requests along the links between operations, with the checks
    that need history (what was deleted stays gone, what was created can be found). Run by
    schemathesis's engine, as its CLI runs it: a sequence replayed against a hub whose state has
    moved on is not taken for a flaky test."""
    sequences = _schema("stateful", base_url=hub.url)
    _authenticate(sequences, credentials.secret_for)
    failures, errors, scenarios = [], [], 0
    for event in from_schema(sequences).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            failures += [f"{node.failure_info.failure.title}: {node.failure_info.failure.message}\n"
                         f"{node.failure_info.code_sample}"
                         for nodes in event.recorder.checks.values() for node in nodes
                         if node.status == Status.FAILURE and node.failure_info is not None]
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            errors.append(repr(event.exception))
    assert not errors, "\n".join(errors)
    assert not failures, "\n\n".join(dict.fromkeys(failures))
    assert scenarios > 0


def test_the_hub_serves_this_document(hub: LiveHub) -> None:
    """What the runs above tested is what ``/docs/openapi.json`` serves, and it covers every route
    with every check turned on."""
    served = httpx.get(f"{hub.url}/docs/openapi.json", headers=bearer(ADMIN_KEY), timeout=30)
    assert served.status_code == 200 and served.json() == _document()
    operations = {f"{op.ok().method.upper()} {op.ok().path}" for op in OPERATIONS.get_all_operations()}
    assert {"POST /edge/sync", "POST /ot-logs", "GET /audit", "DELETE /auth/keys/{credential_id}"} <= operations
    assert len(operations) >= 28 and not any(op.startswith("GET /docs") for op in operations)
    config = OPERATIONS.config.checks_config_for(operation=None, phase=None)
    disabled = [name for name in dir(config) if not name.startswith("_")
                and getattr(getattr(config, name), "enabled", True) is False]
    assert not disabled, f"checks turned off: {disabled}"


def test_a_model_files_answers_are_what_the_document_says(hub: LiveHub, credentials: Credentials) -> None:
    """Fuzzing rarely names a model that exists: the seeded one's files, checked like any case (the
    manifest is JSON, the ONNX graph and the signature octet-stream)."""
    operation = OPERATIONS["/models/{name}/{version}/files/{kind}"]["GET"]
    for kind, media in (("onnx", "application/octet-stream"), ("manifest", "application/json"),
                        ("signature", "application/octet-stream")):
        case = operation.Case(path_parameters={"name": "grid-anomaly", "version": 1, "kind": kind})
        response = case.call_and_validate(base_url=hub.url, headers=bearer(credentials.secret_for(case)))
        assert response.status_code == 200 and response.headers["content-type"][0].startswith(media)


def test_bodies_and_times_are_taken_only_as_the_document_types_them(tmp_path: Path) -> None:
    """Two leniencies of Litestar's that the document does not offer: a number where it says a
    string (or a string where it says a number) in a body, and a number of seconds as a date-time."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", admin_key=ADMIN_KEY, agents=None)
    with TestClient(create_app(settings)) as client:
        client.headers.update(bearer(ADMIN_KEY))
        r = client.post("/auth/keys", json={"name": "grafana", "role": "viewer", "expires_in_days": "5"})
        assert r.status_code == 400 and r.json()["errors"][0]["key"] == "expires_in_days", r.text
        assert client.post("/auth/keys", json={"name": "grafana", "role": "viewer", "expires_in_days": 5}).status_code == 201
        batch = {"edge_id": "EDGE-A", "substation": "S1", "sent_at": 0}
        r = client.post("/edge/sync", json=batch, headers=edge_headers(client, "EDGE-A"))
        assert r.status_code == 400 and "sent_at: Expected `datetime`, got `int`" in r.json()["detail"], r.text
        for until, says in (("12", "is not an RFC 3339 date-time"), ("2026-03-01T10:00:00", "has no time zone"),
                            ("9999-12-31T23:00:00-02:00", "out of range in UTC")):
            r = client.get("/audit", params={"until": until})
            assert r.status_code == 400 and "until: " in r.json()["detail"] and says in r.json()["detail"], r.text
        assert client.get("/audit", params={"until": "2026-03-01T10:00:00+03:00"}).status_code == 200
