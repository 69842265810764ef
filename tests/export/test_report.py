"""Incident reports: incidents raised the way the hub raises them (readings posted, OT logs posted,
the agents run), rendered through ``GET /incidents/{id}/report`` and ``sentinel export report``,
and read back as a manager would read them: the PDF's text (``pdftotext``), the HTML's markup."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from agents.cyber_sentinel import evidence as agent_evidence
from export.report import check_evidence, evidence_chain, flatten_facts, incident_report, render_html, render_pdf
from hub.app import create_app
from hub.auth import AuthStore
from hub.insights.orchestrator import OrchestratorSettings
from hub.settings import Settings
from hub.storage import open_storage
from tests.support.hub_auth import ADMIN, ADMIN_KEY, as_admin, role_headers
from tests.support.live_hub import LiveHub
from tests.support.procs import sentinel_process

pytestmark = pytest.mark.timeout(180)

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
SAG_AT = T0 + timedelta(hours=10)
ATTACKER = "192.168.1.57"
REPORT_PATH = "/incidents/{incident_id:str}/report"
needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                     reason="pdftotext missing: install poppler-utils (scripts/system-deps.sh)")


def _settings(root: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{root / 'hub.db'}", default_substation="NAIROBI-S1",
                    admin_key=ADMIN_KEY, model_registry=str(root / "models"), ingest_rate_per_s=0.0,
                    agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))  # cycles only when asked


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path))) as c:
        assert REPORT_PATH in {r.path for r in c.app.routes}, \
            "the hub serves no incident report: hub.app.create_app must register hub.exports.ROUTES"
        yield as_admin(c)


def _reading(device: str, metric: str, value: float, ts: datetime, unit: str, **kw: Any) -> dict:
    return {"device_id": device, "sensor_type": metric, "metric": metric, "value": value,
            "timestamp": ts.isoformat().replace("+00:00", "Z"), "unit": unit, **kw}


def _sag_readings() -> list[dict]:
    """Half an hour at 220 kV, then a minute sagging to 205 kV with unbalanced currents (the seed's alert)."""
    rows = []
    for i in range(180):
        ts = SAG_AT - timedelta(minutes=31) + timedelta(seconds=10 * i)
        rows += [_reading("FEEDER-F12", f"voltage_l{p}", 220.0 + 0.3 * p, ts, "kV", nominal=220.0) for p in (1, 2, 3)]
    for i in range(60):
        ts = SAG_AT - timedelta(seconds=60 - i)
        rows += [_reading("FEEDER-F12", f"voltage_l{p}", 205.0, ts, "kV", nominal=220.0) for p in (1, 2, 3)]
        rows += [_reading("FEEDER-F12", f"current_l{p}", a, ts, "A") for p, a in ((1, 350.0), (2, 315.0), (3, 280.0))]
    return rows


def _failed_logins() -> list[dict]:
    return [{"ts": (T0 + timedelta(minutes=2 * i)).isoformat(), "kind": "auth", "action": "login",
             "substation": "MOMBASA-S1", "device_id": "RTU-MOM01", "result": "failure", "source": ATTACKER,
             "user": "admin"} for i in range(4)]


def _run(client: Any, at: datetime, agent: str) -> None:
    r = client.post("/agents/run", params=[("at", at.isoformat()), ("agent", agent)], headers=ADMIN)
    assert r.status_code == 200, r.text
    (status,) = [a for a in r.json()["agents"] if a["name"] == agent]
    assert status["state"] == "ok", status


def _incident(client: Any, **match: str) -> dict:
    (found,) = [i for i in client.get("/incidents", headers=ADMIN).json()["incidents"]
                if all(i[k] == v for k, v in match.items())]
    return client.get(f"/incidents/{found['id']}", headers=ADMIN).json()


def raise_sag(client: Any) -> dict:
    """The voltage sag on FEEDER-F12, acknowledged and taken in hand by people, with notes."""
    r = client.post("/sensors/process", json={"sensor_readings": _sag_readings()}, headers=ADMIN)
    assert r.status_code == 200, r.text
    _run(client, SAG_AT, "grid_monitor")
    sag = _incident(client, type="voltage_sag", agent="grid_monitor")
    steps = [("ACKNOWLEDGED", "crew dispatched to F12 <b>now</b>", role_headers(client, "operator")),
             ("IN_PROGRESS", "tap changer inspection under way", ADMIN)]
    for status, note, who in steps:
        r = client.post(f"/incidents/{sag['id']}/status", json={"status": status, "note": note}, headers=who)
        assert r.status_code == 200, r.text
    return client.get(f"/incidents/{sag['id']}", headers=ADMIN).json()


def raise_brute_force(client: Any) -> dict:
    r = client.post("/ot-logs", json=_failed_logins(), headers=ADMIN)
    assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
    _run(client, T0 + timedelta(minutes=10), "cyber_sentinel")
    return _incident(client, agent="cyber_sentinel", type="brute_force")


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    """The PDF's text as pdftotext extracts it, whitespace collapsed (lines wrap where they fit)."""
    assert pdf.startswith(b"%PDF-"), pdf[:40]
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, timeout=60, check=True)
    return " ".join(out.stdout.decode().split())


def _words(text: str) -> str:
    return " ".join(text.split())


class _Page(HTMLParser):
    """An HTML page as a browser would parse it: its elements, their attributes, its text and CSS."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: list[str] = []
        self.text = self.style = ""
        self._in_style = False
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [name for name, _ in attrs]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        else:
            self.text += data


def _get_report(client: Any, incident_id: str, fmt: str = "pdf", **params: Any) -> httpx.Response:
    return client.get(f"/incidents/{incident_id}/report", params={"format": fmt, **params},
                      headers=role_headers(client, "viewer"))


# -- through the hub ------------------------------------------------------------------------------

@needs_pdftotext
def test_a_grid_incident_report_holds_its_facts_history_and_readings(client: TestClient, tmp_path: Path) -> None:
    sag = raise_sag(client)
    r = _get_report(client, sag["id"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'attachment; filename="{sag["id"]}.pdf"'
    text = pdf_text(r.content, tmp_path)

    for expected in (sag["id"], "voltage_sag", "WARNING", "FEEDER-F12", "NAIROBI-S1", "grid_monitor",
                     _words(sag["description"]), _words(sag["recommendation"]), "IN_PROGRESS"):
        assert expected in text, f"{expected!r} is not in the report"
    # who moved it, and why: the notes as written (markup in a note is text, not formatting)
    for actor, note in (("key:test-operator", "crew dispatched to F12 <b>now</b>"),
                        ("key:bootstrap-admin", "tap changer inspection under way")):
        assert actor in text and note in text
    assert "status ACKNOWLEDGED" in text and "status OPEN" in text
    # facts, nested ones flattened: the nominal, the unit, the first episode's start, the worst sample's time
    facts = sag["facts"]
    assert facts["unit"] == "kV" and facts["nominal"] == 220.0
    for key, value in (("nominal", "220"), ("unit", "kV"), ("worst_at", facts["worst_at"]),
                       ("samples_outside", str(facts["samples_outside"]))):
        assert f"{key} {value}" in text, f"fact {key}={value} is not in the report"
    assert f"episodes[0] metric={facts['episodes'][0]['metric']}, start={facts['episodes'][0]['start']}" in text
    assert all(name in text for name, _ in flatten_facts(facts))
    # the readings around it, the three phases on one chart, the time axis in UTC
    assert "FEEDER-F12: voltage (kV)" in text
    assert all(f"voltage_l{p}" in text for p in (1, 2, 3)) and "time (UTC), 2026-03-01" in text
    assert "Evidence" not in text  # a grid incident has no chain of evidence


@needs_pdftotext
def test_a_cyber_incident_report_shows_its_evidence_and_that_the_chain_verifies(client: TestClient,
                                                                                  tmp_path: Path) -> None:
    alert = raise_brute_force(client)
    facts = alert["facts"]
    r = _get_report(client, alert["id"])
    assert r.status_code == 200, r.text
    text = pdf_text(r.content, tmp_path)
    for expected in (alert["id"], "brute_force", alert["severity"], "RTU-MOM01", "MOMBASA-S1", "cyber_sentinel",
                     _words(alert["description"]), _words(alert["recommendation"]), ATTACKER):
        assert expected in text, f"{expected!r} is not in the report"
    assert f"failures {facts['failures']}" in text and "users_tried admin" in text
    assert "The hash chain is verified" in text and "does not verify" not in text
    assert facts["evidence_sha256"] in text
    assert len(facts["evidence_chain"]) == 4 and all(link in text for link in facts["evidence_chain"])
    assert text.count("matches the recorded link") == 4
    assert all(f"ts={e['ts']}" in text for e in facts["evidence"])
    assert "No readings of RTU-MOM01 (failed_logins)" in text

    # the same evidence altered after the fact (a user renamed in one entry): the report says so
    tampered = {**alert, "facts": {**facts, "evidence": [dict(e) for e in facts["evidence"]]}}
    tampered["facts"]["evidence"][1]["user"] = "operator"
    text = pdf_text(render_pdf(incident_report(tampered)), tmp_path)
    assert "The hash chain does not verify" in text and "is verified" not in text
    assert "entry #2 is the first whose link differs" in text
    assert text.count("matches the recorded link") == 1 and text.count("DIFFERS from the recorded link") == 3
    page = render_html(incident_report(tampered))
    assert "The hash chain does not verify" in page and "is verified" not in page


def test_html_shows_markup_from_the_data_as_text_and_loads_nothing(client: TestClient) -> None:
    """A device named with markup (any string is a device id) reaches the description through the
    hub's own check; the page shows it and runs nothing."""
    device = 'F<script>alert("x")</script><img src=x onerror=alert(1)>'
    r = client.post("/sensors/process", json={"sensor_readings": [
        _reading(device, "voltage_l1", 9.5, T0 + timedelta(seconds=s), "kV", nominal=11.0) for s in range(3)]})
    assert r.status_code == 200, r.text
    inc = _incident(client, device_id=device)
    assert "<script>" in inc["description"]
    r = _get_report(client, inc["id"], "html")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = _Page(r.text)
    assert "F&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert device in page.text  # shown as written
    # nothing runs and nothing is fetched: no such element, no event handler, no reference elsewhere
    assert not page.tags & {"script", "img", "iframe", "object", "embed", "link", "base", "form"}, page.tags
    assert not [a for a in page.attrs if a in ("src", "href", "srcset", "action") or a.startswith("on")], page.attrs
    assert "url(" not in page.style and "@import" not in page.style
    assert "svg" in page.tags and "polyline" in page.tags and "voltage_l1" in page.text  # the chart, inline


def test_the_report_needs_a_viewer_and_an_incident_that_exists(client: TestClient) -> None:
    client.post("/sensors/process", json={"sensor_readings": [_reading("FEEDER-F12", "voltage_l1", 9.5, T0, "kV",
                                                                        nominal=11.0)]})
    (inc,) = client.get("/incidents").json()["incidents"]
    url = f"/incidents/{inc['id']}/report"
    admin = client.headers.pop("Authorization")  # no credential at all
    anonymous = client.get(url)
    client.headers["Authorization"] = admin
    assert anonymous.status_code == 401 and "Bearer" in anonymous.headers["www-authenticate"]
    assert client.get(url, headers={"Authorization": "Bearer not-a-key-of-this-hub"}).status_code == 401
    assert client.get(url, headers=role_headers(client, "viewer")).status_code == 200
    assert _get_report(client, "INC-2026-009999").status_code == 404
    assert _get_report(client, "nonsense").status_code == 404
    bad = _get_report(client, inc["id"], "docx")
    assert bad.status_code == 400 and "format" in bad.text
    for margin in (-1, 7 * 86400 + 1, "soon"):
        assert _get_report(client, inc["id"], margin_s=margin).status_code == 400, margin
    assert _get_report(client, inc["id"], margin_s=0).status_code == 200


# -- the library ----------------------------------------------------------------------------------

TRICKY_ENTRIES = [
    {"ts": "2026-03-01T00:00:00+00:00", "kind": "auth", "user": "müller",
     "note": "日本語 \u2028 \"quoted\" \\ </b>"},
    {"value": 1e20, "small": 1.5e-7, "whole": 2.0, "big": 2**53, "neg": -0.0, "none": None, "flag": True},
    {"nested": {"z": [1, {"b": 2, "a": 1}], "a": {}}, "list": [], "emoji": "\U0001f512"},
]


def test_the_exports_chain_is_the_cyber_sentinels_chain() -> None:
    """Two implementations of one documented formula, held to one result: an honest chain verifies in
    both, an altered one fails in both."""
    assert evidence_chain(TRICKY_ENTRIES) == agent_evidence.chain(TRICKY_ENTRIES)
    assert evidence_chain([]) == agent_evidence.chain([]) == []
    links = agent_evidence.chain(TRICKY_ENTRIES)
    facts = {"evidence": TRICKY_ENTRIES, "evidence_chain": links, "evidence_sha256": links[-1]}
    check = check_evidence(facts)
    assert check is not None and check.verified and agent_evidence.verify(facts)
    for altered in ([*TRICKY_ENTRIES[:2]], [TRICKY_ENTRIES[1], TRICKY_ENTRIES[0], TRICKY_ENTRIES[2]],
                    [*TRICKY_ENTRIES[:2], {**TRICKY_ENTRIES[2], "emoji": "x"}]):
        changed = {**facts, "evidence": altered}
        check = check_evidence(changed)
        assert check is not None and not check.verified and not agent_evidence.verify(changed)


@needs_pdftotext
def test_characters_outside_latin_1_do_not_break_the_pdf(tmp_path: Path) -> None:
    incident = {"id": "INC-2026-000007", "timestamp": T0.isoformat(), "type": "voltage_sag", "device_id": "ТР-01",
                "severity": "CRITICAL", "status": "OPEN", "agent": "grid_monitor",
                "description": "Напряжение упало: 9,5 kV (−13 %) \U0001f50c 変電所 \x00\x07 <b>bold?</b>",
                "facts": {"note": "Ωμέγα", "list": ["α", 1.5]},
                "history": [{"timestamp": T0.isoformat(), "status": "OPEN", "actor": "grid_monitor", "note": "ü"}]}
    report = incident_report(incident)
    if Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file():  # embedded: Cyrillic and Greek survive
        text = pdf_text(render_pdf(report), tmp_path)
        assert "Напряжение упало" in text and "ТР-01" in text and "Ωμέγα" in text and "<b>bold?</b>" in text
    # no DejaVu: the standard fonts, with what they cannot show replaced, and still a readable PDF
    text = pdf_text(render_pdf(report, font_dir=tmp_path), tmp_path)
    assert "INC-2026-000007" in text and "CRITICAL" in text and "9,5 kV" in text and "<b>bold?</b>" in text
    assert "on ??-01" in text and "note ?????" in text and " ü " in f" {text} "  # Latin-1 kept, the rest "?"


def test_facts_flatten_readably() -> None:
    rows = dict(flatten_facts({"phases": {"L1": 350.0, "L2": 315.0}, "ratio": 0.123456789, "ok": True, "none": None,
                               "episodes": [{"start": "a", "worst": 9.5}], "deep": {"x": {"y": [1, 2]}},
                               "empty": [], "evidence": [{"ts": "t"}], "evidence_chain": ["0" * 64]}))
    assert rows == {"phases": "L1=350, L2=315", "ratio": "0.123457", "ok": "yes", "none": "-",
                    "episodes[0]": "start=a, worst=9.5", "deep.x.y": "1, 2", "empty": "(none)"}
    assert flatten_facts({}) == [] and flatten_facts({"evidence": []}) == []
    many = flatten_facts({f"k{i}": i for i in range(1000)}, limit=10)
    assert len(many) == 10 and many[-1] == ("...", "991 more rows not shown")


# -- the command ----------------------------------------------------------------------------------

@needs_pdftotext
def test_the_cli_writes_a_report_from_a_hub_and_from_its_database(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    storage = open_storage(settings.database_url)
    try:
        viewer = AuthStore(storage).create_key("manager", "viewer", created_by="test").secret
        with LiveHub(storage, settings) as hub, httpx.Client(base_url=hub.url, timeout=60) as http:
            alert = raise_brute_force(http)
            out = tmp_path / "from-hub.pdf"
            env = {**os.environ, "SENTINEL_API_KEY": viewer}
            with sentinel_process("export", "report", alert["id"], "--hub-url", hub.url, "--output", str(out),
                                  cwd=tmp_path, env=env) as proc:
                stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            assert f"written to {out}" in stdout
            text = pdf_text(out.read_bytes(), tmp_path)
            assert alert["id"] in text and alert["facts"]["evidence_sha256"] in text and "verified" in text

            no_key = {k: v for k, v in os.environ.items() if k != "SENTINEL_API_KEY"}
            with sentinel_process("export", "report", alert["id"], "--hub-url", hub.url, cwd=tmp_path,
                                  env=no_key) as proc:
                _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2 and "401" in stderr and "SENTINEL_API_KEY" in stderr
            assert not (tmp_path / f"{alert['id']}.pdf").exists()
    finally:
        storage.close()

    # the hub stopped: the same report straight from its database, default file name, as HTML too
    for fmt in ("pdf", "html"):
        with sentinel_process("export", "report", alert["id"], "--format", fmt, "--database", settings.database_url,
                              cwd=tmp_path) as proc:
            _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert alert["id"] in pdf_text((tmp_path / f"{alert['id']}.pdf").read_bytes(), tmp_path)
    assert "The hash chain is verified" in (tmp_path / f"{alert['id']}.html").read_text()
    with sentinel_process("export", "report", "INC-2026-009999", "--database", settings.database_url,
                          cwd=tmp_path) as proc:
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no incident INC-2026-009999" in stderr
