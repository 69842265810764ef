"""Enrolment: an admin makes a one-time token at the hub; a new box exchanges it once for its own
edge credential, kept in the service's environment file; the box then syncs with it."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from edge.buffer import Buffer
from edge.sync import SyncLoop
from hub.auth.store import AuthError, AuthStore
from hub.settings import Settings
from hub.storage.sqlite import SQLiteStorage
from protocols.config import load_config
from tests.conftest import CONFIGS
from tests.support.hub_auth import ADMIN, ADMIN_KEY, role_headers
from tests.support.live_hub import LiveHub

EDGE = "edge-nairobi-01"


def test_a_token_is_used_once_by_the_edge_it_is_for_and_not_after_it_expires(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        store = AuthStore(storage)
        bound = store.create_enrolment(EDGE, "NAIROBI-S1", created_by="test")
        with pytest.raises(AuthError, match="unknown, used, expired or for another edge"):
            store.enrol(bound.token, "edge-mombasa-01")  # another edge: refused, and not used up
        issued, eid = store.enrol(bound.token, EDGE)
        assert eid == bound.id and issued.principal == EDGE and issued.substation == "NAIROBI-S1"
        who = store.authenticate(issued.secret)
        assert who is not None and who.kind == "edge" and who.name == EDGE and who.substation == "NAIROBI-S1"
        with pytest.raises(AuthError):
            store.enrol(bound.token, EDGE)  # once
        anyone = store.create_enrolment(created_by="test")
        assert store.enrol(anyone.token, "edge-kisumu-01")[0].principal == "edge-kisumu-01"
        soon = store.create_enrolment(EDGE, expires_in_s=60)
        with storage.transaction() as tx:
            tx.execute("UPDATE auth_enrolments SET expires_at = ? WHERE id = ?", (time.time() - 1, soon.id))
        with pytest.raises(AuthError):
            store.enrol(soon.token, EDGE)
        assert store.authenticate(bound.token) is None  # an enrolment token is no credential itself
        listed = {e.id: e for e in store.enrolments(include_used=True)}
        assert listed[bound.id].used_by == EDGE and listed[bound.id].credential_id == issued.id
        assert [e.id for e in store.enrolments()] == []  # none left to use
        with pytest.raises(AuthError, match="expiry"):
            store.create_enrolment(expires_in_s=10)
    finally:
        storage.close()


def _sentinel(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    return subprocess.run([sys.executable, "-m", "sentinel_cli.main", *args], cwd=cwd, input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_new_box_enrols_with_the_token_and_syncs_with_its_own_credential(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    storage = SQLiteStorage(db)
    settings = Settings(database_url=f"sqlite:///{db}", admin_key=ADMIN_KEY, agents=None,
                        model_registry=str(tmp_path / "models"))
    env_file = tmp_path / "etc" / "edge.env"
    try:
        with LiveHub(storage, settings) as hub:
            made = _sentinel("hub", "edges", "enrolment", "--database", f"sqlite:///{db}", "--edge-id", EDGE,
                             "--substation", "NAIROBI-S1", cwd=tmp_path)
            assert made.returncode == 0, made.stderr
            token = made.stdout.strip().splitlines()[-1]
            assert token.startswith("sgn_") and "sentinel edge enrol" in made.stderr
            env_file.parent.mkdir()
            env_file.write_text("# site settings\nSENTINEL_OTHER=1\n")
            enrol = ["edge", "enrol", "--config", str(CONFIGS / "nairobi-s1.toml"), "--hub-url", hub.url,
                     "--token-stdin", "--env-file", str(env_file)]
            done = _sentinel(*enrol, cwd=tmp_path, stdin=token + "\n")
            assert done.returncode == 0, done.stderr
            assert f"enrolled {EDGE}" in done.stdout and "substation NAIROBI-S1" in done.stdout
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
            lines = env_file.read_text().splitlines()
            assert lines[:2] == ["# site settings", "SENTINEL_OTHER=1"] and lines[2].startswith("SENTINEL_EDGE_TOKEN=sge_")
            credential = lines[2].split("=", 1)[1]
            again = _sentinel(*enrol, cwd=tmp_path, stdin=token + "\n")
            assert again.returncode == 2 and "already holds SENTINEL_EDGE_TOKEN" in again.stderr
            reused = _sentinel(*enrol, "--force", cwd=tmp_path, stdin=token + "\n")
            assert reused.returncode == 1 and "refused the enrolment (401)" in reused.stderr
            assert env_file.read_text().splitlines()[2] == lines[2]  # a refusal leaves the credential as it was

            # the box syncs with the credential it got
            cfg = load_config(CONFIGS / "nairobi-s1.toml")
            cfg = msgspec.structs.replace(cfg, hub=msgspec.structs.replace(cfg.hub, url=hub.url))
            buf = Buffer(tmp_path / "edge.db", "NAIROBI-S1")
            try:
                buf.append([(time.time(), "FEEDER-F12", "voltage_l1", 11.02, "kV", 1.0, 0)])

                async def sync() -> int | None:
                    loop = SyncLoop(cfg, buf, token=credential)
                    try:
                        return await loop.sync_once()
                    finally:
                        await loop.aclose()

                assert asyncio.run(sync()) == 1
            finally:
                buf.close()

            with httpx.Client(base_url=hub.url, timeout=10) as c:
                listed = c.get("/edges/enrolments", params={"all": "true"}, headers=ADMIN).json()["enrolments"]
                assert [(e["used_by"], e["edge_id"]) for e in listed] == [(EDGE, EDGE)]
                api = c.post("/edges/enrolments", json={"substation": "MOMBASA-S1", "expires_in_hours": 1},
                             headers=ADMIN)
                assert api.status_code == 201 and api.json()["token"].startswith("sgn_")
                assert c.post("/edges/enrolments", json={}, headers=role_headers(c, "operator")).status_code == 403
                got = c.post("/edges/enrol", json={"token": api.json()["token"], "edge_id": "edge-mombasa-01"})
                assert got.status_code == 201 and got.json()["substation"] == "MOMBASA-S1"
                bad = c.post("/edges/enrol", json={"token": "sgn_guess", "edge_id": "edge-x"})
                assert bad.status_code == 401 and "unknown, used, expired" in bad.json()["detail"]
                audit = [e["action"] for e in c.get("/audit", headers=ADMIN).json()["entries"]]
                assert {"edge.enrol", "edge.enrol_failed", "edge.enrolment"} <= set(audit)
    finally:
        storage.close()


def test_a_technician_makes_the_config_from_templates_and_enrols_in_one_command(tmp_path: Path) -> None:
    """`sentinel edge init` as a scripted install runs it: the config from templates, validated as
    `edge run` reads it, the templates copied beside it, then the enrolment; and what it refuses."""
    db = tmp_path / "hub.db"
    storage = SQLiteStorage(db)
    settings = Settings(database_url=f"sqlite:///{db}", admin_key=ADMIN_KEY, agents=None,
                        model_registry=str(tmp_path / "models"))
    etc = tmp_path / "etc"
    try:
        with LiveHub(storage, settings) as hub:
            token = AuthStore(storage).create_enrolment("edge-kisumu-02", "KISUMU-S2").token
            init = ["edge", "init", "--out", str(etc / "edge.toml"), "--edge-id", "edge-kisumu-02", "--substation",
                    "KISUMU-S2", "--hub-url", hub.url, "--buffer", str(tmp_path / "buffer.db"),
                    "--device", "F1=feeder-relay-11kv@127.0.0.1:15020/2", "--device", "F2=feeder-relay-11kv@127.0.0.1/3",
                    "--env-file", str(etc / "edge.env")]
            done = _sentinel(*init, "--token-stdin", cwd=tmp_path, stdin=token + "\n")
            assert done.returncode == 0, done.stderr
            assert "2 devices from feeder-relay-11kv" in done.stdout and "enrolled edge-kisumu-02" in done.stdout
            cfg = load_config(etc / "edge.toml")
            assert [(d.id, d.port, d.unit_id, len(d.points)) for d in cfg.devices] == [("F1", 15020, 2, 7),
                                                                                       ("F2", 502, 3, 7)]
            assert (etc / "templates" / "feeder-relay-11kv.toml").is_file()
            assert (etc / "edge.env").read_text().startswith("SENTINEL_EDGE_TOKEN=sge_")
            again = _sentinel(*init, cwd=tmp_path)
            assert again.returncode == 2 and "exists: --force" in again.stderr
            unknown = _sentinel(*[a if a != "F2=feeder-relay-11kv@127.0.0.1/3" else "F2=meter-x@h" for a in init],
                                "--force", cwd=tmp_path)
            assert unknown.returncode == 2 and "no device template 'meter-x'" in unknown.stderr
            bad = _sentinel(*init[:-4], "--device", "F1 at 10.0.0.1", "--force", cwd=tmp_path)
            assert bad.returncode == 2 and "write ID=TEMPLATE@HOST" in bad.stderr
            dup = _sentinel(*[a if a != "F2=feeder-relay-11kv@127.0.0.1/3" else "F1=feeder-relay-11kv@127.0.0.1/3"
                              for a in init], "--force", cwd=tmp_path)
            assert dup.returncode == 2 and "appears twice" in dup.stderr and str(etc / "edge.toml") in dup.stderr
            missing = _sentinel("edge", "init", "--out", str(tmp_path / "x.toml"), cwd=tmp_path)
            assert missing.returncode == 2 and "--edge-id is missing" in missing.stderr
            assert load_config(etc / "edge.toml").devices[1].id == "F2"  # refusals left the config as it was
    finally:
        storage.close()
