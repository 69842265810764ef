"""Who may call the hub: every route's policy, edge identity, logins, keys, the audit log.

The authorization matrix walks every route the app has and calls it as each kind of caller: a
route added without a policy, or with the wrong one, fails here."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import TestClient

from agents.cyber_sentinel.evidence import GENESIS, chain
from hub.app import create_app
from hub.auth.guards import policy_of
from hub.auth.model import Role
from hub.auth.store import AuthError, AuthStore, _link
from hub.insights.orchestrator import OrchestratorSettings
from hub.settings import Settings
from hub.storage import open_storage
from protocols.reading import Reading
from protocols.wire import ReadingRun, SyncBatch, encode
from tests.support.hub_auth import ADMIN, ADMIN_KEY, bearer, edge_headers, role_headers

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"),
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))  # cycles only when asked
    with TestClient(create_app(settings)) as c:
        yield c


def _batch(edge: str, substation: str = "NAIROBI-S1", first: int = 1, n: int = 3) -> bytes:
    items = [Reading(ts=T0 + timedelta(seconds=i), substation=substation, device_id="FEEDER-F12",
                     metric="voltage_l1", value=11.0, unit="kV") for i in range(n)]
    return encode(SyncBatch(edge_id=edge, substation=substation, sent_at=T0,
                            readings=ReadingRun(first_seq=first, items=items)))


def _readings(client: TestClient) -> int:
    return sum(client.get("/stats", headers=ADMIN).json()["readings_by_substation"].values())


# -- the matrix ------------------------------------------------------------------------------------

CALLERS = ("anonymous", "viewer", "operator", "admin", "edge A", "edge B")
ROLE_OF = {"viewer": Role.VIEWER, "operator": Role.OPERATOR, "admin": Role.ADMIN, "edge A": Role.EDGE,
           "edge B": Role.EDGE}


def _routes(client: TestClient) -> list[tuple[str, str, object]]:
    out = []
    for route in client.app.routes:
        if isinstance(route, WebSocketRoute):  # test_every_websocket_route_admits_as_its_policy_says
            continue
        assert isinstance(route, HTTPRoute), f"{route.path}: a route kind the matrix does not know"
        for method, handler in route.route_handler_map.items():
            if method in ("HEAD", "OPTIONS"):
                continue
            handler = handler[0] if isinstance(handler, tuple) else handler
            out.append((route.path, method, handler))
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+):(\w+)\}", lambda m: "1" if m.group(2) == "int" else "x", path)


def test_every_route_declares_a_policy_and_the_matrix_holds(client: TestClient) -> None:
    headers = {"anonymous": {}, "viewer": role_headers(client, "viewer"),
               "operator": role_headers(client, "operator"), "admin": ADMIN,
               "edge A": edge_headers(client, "EDGE-A"), "edge B": edge_headers(client, "EDGE-B")}
    routes = _routes(client)
    assert len(routes) >= 30
    undeclared = [f"{m} {p}" for p, m, h in routes if policy_of(h) is None]
    assert not undeclared, f"routes without an access policy: {undeclared}"
    public = sorted(f"{m} {p}" for p, m, h in routes if policy_of(h).roles is None)
    # nothing else without a credential: the login form and the two files it loads (hub/dashboard), and
    # a new box's enrolment (it holds a one-time token, not a credential yet)
    assert public == ["GET /healthz", "GET /login", "GET /login/assets/{name:str}", "POST /auth/login",
                      "POST /edges/enrol"]
    failures = []
    for path, method, handler in routes:
        policy = policy_of(handler)
        for caller in CALLERS:
            r = client.request(method, _concrete(path), headers=headers[caller], content=b"{}",
                               follow_redirects=False)
            allowed = policy.roles is None or (caller != "anonymous" and policy.allows(ROLE_OF[caller]))
            if allowed:
                ok = r.status_code not in (401, 403) and r.status_code < 500
            else:
                ok = r.status_code == (401 if caller == "anonymous" else 403)
            if not ok:
                failures.append(f"{method} {path} as {caller}: {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)


def test_every_websocket_route_admits_as_its_policy_says(client: TestClient) -> None:
    """A WebSocket refused before it is accepted: closed with 4000 + the HTTP status it would get
    (a server that can answer the handshake with an HTTP status does: tests/hub/test_ws.py)."""
    headers = {"anonymous": {}, "viewer": role_headers(client, "viewer"),
               "operator": role_headers(client, "operator"), "admin": ADMIN,
               "edge A": edge_headers(client, "EDGE-A"), "edge B": edge_headers(client, "EDGE-B")}
    routes = [r for r in client.app.routes if isinstance(r, WebSocketRoute)]
    assert [r.path for r in routes] == ["/ws/grid-status"]
    failures = []
    for route in routes:
        policy = policy_of(route.route_handler)
        assert policy is not None and policy.roles is not None, f"{route.path}: no access policy"
        for caller in CALLERS:
            allowed = caller != "anonymous" and policy.allows(ROLE_OF[caller])
            try:
                with client.websocket_connect(route.path, headers=headers[caller]) as ws:
                    got = f"accepted, first message {ws.receive_json()['type']}"
            except WebSocketDisconnect as exc:
                got = f"closed {exc.code}"
            want = "accepted, first message snapshot" if allowed else f"closed {4401 if caller == 'anonymous' else 4403}"
            if got != want:
                failures.append(f"WS {route.path} as {caller}: {got}, not {want}")
    assert not failures, "\n".join(failures)


def test_refusals_say_why_and_how(client: TestClient) -> None:
    r = client.get("/incidents")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["detail"]
    r = client.get("/incidents", headers=bearer("sgk_not-a-key"))
    assert r.status_code == 401 and "unknown, revoked or expired" in r.json()["detail"]
    r = client.post("/sensors/process", json={"sensor_readings": []}, headers=role_headers(client, "viewer"))
    assert r.status_code == 403 and "key:test-viewer (role viewer)" in r.json()["detail"]


# -- edges -----------------------------------------------------------------------------------------

def test_an_edge_syncs_only_as_itself(client: TestClient) -> None:
    a = edge_headers(client, "EDGE-A")
    b = edge_headers(client, "EDGE-B")
    assert client.post("/edge/sync", content=_batch("EDGE-A"), headers=a).status_code == 200
    assert _readings(client) == 3
    spoof = client.post("/edge/sync", content=_batch("EDGE-A", first=4), headers=b)
    assert spoof.status_code == 403 and "belongs to edge 'EDGE-B'" in spoof.json()["detail"]
    assert client.post("/edge/sync", content=_batch("EDGE-A", first=4), headers=client.headers).status_code == 401
    assert _readings(client) == 3  # nothing stored from either
    states = {e["edge_id"]: e for e in client.get("/stats", headers=ADMIN).json()["edges"]}
    assert set(states) == {"EDGE-A"} and states["EDGE-A"]["readings_acked_through"] == 3


def test_an_edge_bound_to_a_substation_speaks_only_for_it(client: TestClient) -> None:
    creds = edge_headers(client, "EDGE-M", substation="MOMBASA-S1")
    r = client.post("/edge/sync", content=_batch("EDGE-M", substation="NAIROBI-S1"), headers=creds)
    assert r.status_code == 403 and "registered for 'MOMBASA-S1'" in r.json()["detail"]
    assert client.post("/edge/sync", content=_batch("EDGE-M", substation="MOMBASA-S1"), headers=creds).status_code == 200


def test_with_no_edge_registered_syncs_are_refused_with_a_hint(client: TestClient,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    import hub.auth.guards as guards

    guards._last_hint = 0.0
    with caplog.at_level(logging.WARNING, logger="hub.auth.guards"):
        assert client.post("/edge/sync", content=_batch("EDGE-A")).status_code == 401
    assert any("sentinel hub edges add EDGE_ID" in r.getMessage() for r in caplog.records)
    assert _readings(client) == 0


def test_a_revoked_edge_can_no_longer_sync_and_rotation_keeps_it_running(client: TestClient) -> None:
    old = edge_headers(client, "EDGE-A")
    assert client.post("/edge/sync", content=_batch("EDGE-A"), headers=old).status_code == 200
    # rotate: a second credential, then revoke the first by id
    new = client.post("/edges/credentials", json={"edge_id": "EDGE-A"}, headers=ADMIN).json()
    creds = client.get("/edges/credentials", headers=ADMIN).json()["credentials"]
    first = next(c["id"] for c in creds if c["id"] != new["id"])
    assert "secret" not in creds[0] and all("hash" not in k for c in creds for k in c)
    assert client.delete(f"/auth/keys/{first}", headers=ADMIN).status_code == 200
    assert client.post("/edge/sync", content=_batch("EDGE-A", first=4), headers=old).status_code == 401
    assert client.post("/edge/sync", content=_batch("EDGE-A", first=4), headers=bearer(new["secret"])).status_code == 200
    assert client.delete("/edges/EDGE-A/credentials", headers=ADMIN).json() == {"edge_id": "EDGE-A", "revoked": 1}
    assert client.post("/edge/sync", content=_batch("EDGE-A", first=7), headers=bearer(new["secret"])).status_code == 401
    assert client.delete("/edges/EDGE-A/credentials", headers=ADMIN).status_code == 404


# -- people ----------------------------------------------------------------------------------------

def test_login_session_cookie_logout(client: TestClient) -> None:
    body = {"name": "alice", "role": "operator", "password": "correct horse battery"}
    assert client.post("/auth/users", json=body, headers=ADMIN).status_code == 201
    r = client.post("/auth/login", json={"username": "alice", "password": "correct horse battery"})
    assert r.status_code == 200
    token = r.json()["token"]
    assert token.startswith("sgs_") and r.json()["role"] == "operator"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    assert client.get("/auth/whoami").json()["principal"] == "user:alice"  # by the cookie, as a browser
    assert client.get("/auth/whoami", headers=bearer(token)).json()["role"] == "operator"
    assert client.post("/auth/logout").json() == {"logged_out": True}
    client.cookies.clear()
    assert client.get("/auth/whoami", headers=bearer(token)).status_code == 401


def test_a_password_change_or_disabling_ends_sessions_and_demotion_holds_at_once(client: TestClient) -> None:
    client.post("/auth/users", json={"name": "bob", "role": "admin", "password": "first password!"}, headers=ADMIN)
    token = client.post("/auth/login", json={"username": "bob", "password": "first password!"}).json()["token"]
    client.cookies.clear()
    assert client.get("/auth/users", headers=bearer(token)).status_code == 200
    client.post("/auth/users", json={"name": "bob", "role": "viewer", "password": "second password"}, headers=ADMIN)
    assert client.get("/auth/users", headers=bearer(token)).status_code == 401  # the session ended
    token = client.post("/auth/login", json={"username": "bob", "password": "second password"}).json()["token"]
    client.cookies.clear()
    assert client.get("/auth/users", headers=bearer(token)).status_code == 403  # a viewer now
    assert client.delete("/auth/users/bob", headers=ADMIN).json()["disabled"] is True
    assert client.get("/incidents", headers=bearer(token)).status_code == 401
    assert client.post("/auth/login", json={"username": "bob", "password": "second password"}).status_code == 401


def test_logins_are_rate_limited_per_user_and_address(database_url: str) -> None:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, agents=None, login_max_failures=3)
    with TestClient(create_app(settings)) as c:
        c.post("/auth/users", json={"name": "carol", "role": "viewer", "password": "a long password"}, headers=ADMIN)
        for _ in range(3):
            assert c.post("/auth/login", json={"username": "carol", "password": "guess"}).status_code == 401
        r = c.post("/auth/login", json={"username": "carol", "password": "a long password"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # even the right one, for a while
        assert c.post("/auth/login", json={"username": "nobody", "password": "x"}).status_code == 429  # same address
        failed = c.get("/audit", params={"action": "auth.login_failed"}, headers=ADMIN).json()["entries"]
        assert len(failed) == 3 and {e["target"] for e in failed} == {"carol"}


def test_api_keys_roles_expiry_and_revocation(client: TestClient) -> None:
    r = client.post("/auth/keys", json={"name": "grafana", "role": "viewer"}, headers=ADMIN)
    assert r.status_code == 201
    key = r.json()
    assert key["secret"].startswith("sgk_")
    assert client.get("/incidents", headers=bearer(key["secret"])).status_code == 200
    assert client.post("/auth/keys", json={"name": "x", "role": "root"}, headers=ADMIN).status_code == 400
    listed = client.get("/auth/keys", headers=ADMIN).json()["credentials"]
    assert {k["principal"] for k in listed} >= {"grafana", "bootstrap-admin"} and "secret" not in listed[0]
    assert client.delete(f"/auth/keys/{key['id']}", headers=ADMIN).status_code == 200
    assert client.get("/incidents", headers=bearer(key["secret"])).status_code == 401
    store: AuthStore = client.app.state.auth
    short = store.create_key("short", "viewer", expires_in_s=0.05)
    import time

    time.sleep(0.1)
    assert store.authenticate(short.secret) is None


def test_the_bootstrap_key_must_be_long_and_is_stored_hashed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with pytest.raises(AuthError, match="at least 24"):
        create_app(Settings(database_url=url, admin_key="short"))
    with TestClient(create_app(Settings(database_url=url, admin_key=ADMIN_KEY, agents=None))) as c:
        assert c.get("/auth/whoami", headers=ADMIN).json()["role"] == "admin"
    raw = (tmp_path / "h.db").read_bytes()
    assert ADMIN_KEY.encode() not in raw  # only its hash


# -- the audit log ---------------------------------------------------------------------------------

def test_changes_of_state_are_audited_and_the_chain_detects_tampering(client: TestClient, database_url: str) -> None:
    operator = role_headers(client, "operator")
    client.post("/sensors/process", headers=operator, json={"sensor_readings": [
        {"device_id": "FEEDER-F12", "sensor_type": "voltage", "value": 190.0, "timestamp": "2026-03-01T10:16:00Z"}]})
    (inc,) = client.get("/incidents", headers=operator).json()["incidents"]
    assert client.post(f"/incidents/{inc['id']}/status", json={"status": "ACKNOWLEDGED"},
                       headers=operator).status_code == 200
    client.post("/edges/credentials", json={"edge_id": "EDGE-Z"}, headers=ADMIN)
    entries = client.get("/audit", headers=ADMIN).json()["entries"]
    actions = [e["action"] for e in reversed(entries)]
    assert actions[:1] == ["key.bootstrap"] and {"key.create", "incident.status", "edge.add"} <= set(actions)
    ack = next(e for e in entries if e["action"] == "incident.status")
    assert ack["principal"] == "key:test-operator" and ack["target"] == inc["id"]
    assert ack["detail"] == {"status": "ACKNOWLEDGED", "previous": "OPEN", "note": ""}
    assert ack["source"].startswith("testclient")
    only = client.get("/audit", params={"action": "edge.", "principal": "key:bootstrap-admin"},
                      headers=ADMIN).json()["entries"]
    assert [e["action"] for e in only] == ["edge.add"]
    assert client.get("/audit/verify", headers=ADMIN).json() == {"ok": True, "entries": len(entries),
                                                                 "first_bad_seq": None}
    # someone with the database edits history: the chain names the entry
    storage = client.app.state.storage
    with storage.transaction() as tx:
        tx.execute("UPDATE audit_log SET principal = ? WHERE action = ?", ("key:someone-else", "incident.status"))
    verdict = client.get("/audit/verify", headers=ADMIN).json()
    assert verdict["ok"] is False and verdict["first_bad_seq"] == ack["seq"]


def test_the_audit_chain_is_the_evidence_chain() -> None:
    entries = [{"a": 1}, {"b": [1, 2]}]
    assert _link(_link(GENESIS, entries[0]), entries[1]) == chain(entries)[-1]


def test_agents_as_of_a_past_time_are_bounded_by_the_data(database_url: str) -> None:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY,
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))
    with TestClient(create_app(settings)) as c:
        c.headers.update(ADMIN)
        assert c.post("/agents/run", params={"at": "2026-03-01T10:00:00Z"}).status_code == 400  # nothing held
        c.post("/sensors/process", json={"sensor_readings": [
            {"device_id": "FEEDER-F12", "sensor_type": "voltage", "value": 230.0, "timestamp": "2026-03-01T10:00:00Z"}]})
        for at in ("1970-01-01T00:00:00.5Z", "2026-02-01T00:00:00Z", "9999-01-01T00:00:00Z"):
            r = c.post("/agents/run", params={"at": at})
            assert r.status_code == 400 and "outside the readings held" in r.json()["detail"], (at, r.text)
        assert c.post("/agents/run", params={"at": "2026-03-01T10:05:00Z"}).status_code == 200
        assert c.get("/audit", params={"action": "agents.run"}).json()["entries"][0]["detail"]["at"].startswith("2026")
        viewer = role_headers(c, "viewer")
        assert c.post("/agents/run", headers={**viewer}).status_code == 403


def test_ingest_is_rate_limited_per_principal(database_url: str) -> None:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, agents=None, ingest_rate_per_s=1.0,
                        ingest_burst=2)
    with TestClient(create_app(settings)) as c:
        a = edge_headers(c, "EDGE-A")
        b = edge_headers(c, "EDGE-B")
        codes = [c.post("/edge/sync", content=_batch("EDGE-A", first=1 + 3 * i), headers=a).status_code
                 for i in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        assert c.post("/edge/sync", content=_batch("EDGE-B"), headers=b).status_code == 200  # its own bucket
        r = c.post("/edge/sync", content=_batch("EDGE-A", first=7), headers=a)
        assert r.status_code == 429 and "rate limit" in r.json()["detail"] and r.headers["retry-after"]


def test_cli_manages_credentials_on_the_database(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'hub.db'}"

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sentinel_cli.main", "hub", *args, "--database", url],
                              capture_output=True, text=True, input=stdin, timeout=60)

    r = cli("keys", "create", "scada-gw", "--role", "operator")
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert secret.startswith("sgk_") and "shown once" in r.stderr
    r = cli("users", "add", "dave", "--role", "viewer", "--password-stdin", stdin="a long password\n")
    assert r.returncode == 0 and "user dave: role viewer" in r.stdout
    assert cli("users", "add", "eve", "--role", "viewer", "--password-stdin", stdin="short\n").returncode == 2
    assert "dave" in cli("users", "list").stdout
    key_id = re.search(r"(key_[0-9a-f]+)\s+scada-gw", cli("keys", "list").stdout).group(1)
    storage = open_storage(url)
    try:
        who = AuthStore(storage).authenticate(secret)
        assert who is not None and who.label == "key:scada-gw" and who.role is Role.OPERATOR
    finally:
        storage.close()
    assert cli("keys", "revoke", key_id).returncode == 0
    assert cli("keys", "revoke", key_id).returncode == 2
    audit = cli("audit")
    assert audit.returncode == 0 and "key.create" in audit.stdout and "credential.revoke" in audit.stdout
    assert "cli:" in audit.stdout
    assert cli("audit", "--verify").returncode == 0
    storage = open_storage(url)
    try:
        with storage.transaction() as tx:
            tx.execute("DELETE FROM audit_log WHERE seq = 1")
    finally:
        storage.close()
    r = cli("audit", "--verify")
    assert r.returncode == 1 and "ALTERED" in r.stdout


def test_secrets_are_never_listed_or_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        secret = client.post("/edges/credentials", json={"edge_id": "EDGE-S"}, headers=ADMIN).json()["secret"]
        client.get("/incidents", headers=bearer(secret))
    dumped = msgspec.json.encode([client.get(p, headers=ADMIN).json() for p in
                                  ("/edges/credentials", "/auth/keys", "/audit")])
    assert secret.encode() not in dumped and ADMIN_KEY.encode() not in dumped
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_hubs_starting_together_store_the_bootstrap_key_once(storage) -> None:  # noqa: ANN001
    """Several hubs (here threads, each with its own AuthStore) starting on a new database store
    SENTINEL_ADMIN_KEY at the same moment: one stores it, the others find it; none fails. A revoked
    bootstrap key is refused, naming it."""
    import threading

    key = "bootstrap-key-0123456789abcdefXYZ"
    AuthStore(storage)  # the tables, as the first hub makes them
    start, results, errors = threading.Barrier(6), [], []

    def hub() -> None:
        auth = AuthStore(storage)
        start.wait()
        try:
            results.append(auth.ensure_bootstrap_key(key))
        except Exception as exc:  # noqa: BLE001  (collected: the assertion names it)
            errors.append(exc)

    threads = [threading.Thread(target=hub) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(results) == [False] * 5 + [True]
    auth = AuthStore(storage)
    (admin,) = [c for c in auth.credentials("key") if c.principal == "bootstrap-admin"]
    assert auth.ensure_bootstrap_key(key) is False
    auth.revoke(admin.id)
    with pytest.raises(AuthError, match=f"SENTINEL_ADMIN_KEY is the revoked key {admin.id}"):
        auth.ensure_bootstrap_key(key)
