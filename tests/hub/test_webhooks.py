"""Webhooks: new and escalated incidents reach receivers on 127.0.0.1, signed, retried, logged.

Each receiver is a real HTTP server (``http.server``) on a free loopback port that answers as the
test scripts it (500 twice then 200; never; not at all: the port closed). The hub is the real app
(TestClient: its lifespan runs the dispatcher as it does in production) over both storage
backends; incidents come from readings posted to ``POST /sensors/process``, as a utility's would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.settings import Settings
from hub.storage.base import Storage
from hub.webhooks import WebhookSettings
from tests.support.hub_auth import ADMIN, ADMIN_KEY, role_headers
from tests.support.metrics import Scrape

SECRET = "a-receiver-secret-0123456789"
FAST = WebhookSettings(poll_s=0.05, timeout_s=1.0, backoff_s=0.2, backoff_cap_s=0.4, max_attempts=4)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with the next of ``answers``
    (200 when they run out); with ``hang`` it answers nothing until the event is set."""

    def __init__(self, answers: tuple[int, ...] = (), *, hang: bool = False, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.answers = list(answers)
        self.release = threading.Event()
        self.hang = hang
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.monotonic()))
                    code = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.hang:
                    receiver.release.wait(30)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"receiver.{self.port}", daemon=True)
        self._thread.start()

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*answers: int, hang: bool = False, port: int = 0) -> Receiver:
        made.append(Receiver(answers, hang=hang, port=port))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _app(storage: Storage, webhooks: WebhookSettings = FAST) -> TestClient:
    settings = Settings(admin_key=ADMIN_KEY, agents=None, ingest_rate_per_s=0.0, webhooks=webhooks)
    return TestClient(create_app(settings, storage=storage))


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    with _app(storage) as c:
        yield c


T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def _ingest(client: TestClient, frequency_hz: float, *, device: str = "FEEDER-F12", second: int = 0) -> float:
    """Post one frequency reading (49.3 Hz: WARNING, 48.8 Hz: CRITICAL, 50.0: none); the seconds it took."""
    started = time.perf_counter()
    r = client.post("/sensors/process", headers=ADMIN, json={"sensor_readings": [
        {"device_id": device, "sensor_type": "frequency", "value": frequency_hz,
         "timestamp": (T0 + timedelta(seconds=second)).isoformat()}]})
    took = time.perf_counter() - started
    assert r.status_code == 200, r.text
    return took


def _webhook(client: TestClient, url: str, min_severity: str = "WARNING", secret: str | None = SECRET) -> str:
    r = client.post("/webhooks", headers=ADMIN,
                    json={"url": url, "min_severity": min_severity, **({"secret": secret} if secret else {})})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _deliveries(client: TestClient, hook_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/webhooks/{hook_id}/deliveries", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def _signature_ok(request: Received, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["x-sentinel-signature"], expected)


# -- the test: fails twice, then accepts ----------------------------------------------------

def test_a_receiver_that_fails_twice_then_accepts_gets_the_incident_signed_and_logged(
        client: TestClient, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(500, 500)
    hook = _webhook(client, f"{receiver.url}/sentinel")
    _ingest(client, 49.3)  # under-frequency: a WARNING incident
    incident = client.get("/incidents", headers=ADMIN).json()["incidents"][0]
    assert incident["severity"] == "WARNING"

    log = _wait("the delivery is delivered", lambda: [d for d in _deliveries(client, hook) if d["status"] == "delivered"])
    requests = receiver.received()
    assert len(requests) == 3 and all(r.path == "/sentinel" for r in requests)
    for r in requests:
        assert _signature_ok(r, SECRET)
        assert not _signature_ok(r, SECRET + "x")  # the check can fail
        assert r.headers["content-type"] == "application/json"
        assert abs(int(r.headers["x-sentinel-timestamp"]) - time.time()) < 60
    assert len({r.body for r in requests}) == 1  # every attempt sends the same bytes
    assert {r.headers["x-sentinel-delivery"] for r in requests} == {log[0]["id"]}
    body = json.loads(requests[0].body)
    assert body["event"] == "incident.created" == requests[0].headers["x-sentinel-event"]
    assert body["incident"] == client.get(f"/incidents/{incident['id']}", headers=ADMIN).json()  # as the API serves it

    assert len(log) == 1
    delivery = log[0]
    assert (delivery["webhook_id"], delivery["event"], delivery["incident_id"], delivery["severity"]) == \
        (hook, "incident.created", incident["id"], "WARNING")
    assert delivery["next_attempt_at"] is None and delivery["delivered_at"] is not None
    attempts = delivery["attempts"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == \
        [(1, 500, "HTTP 500"), (2, 500, "HTTP 500"), (3, 200, "")]
    assert attempts[0]["next_retry_at"] is not None and attempts[1]["next_retry_at"] is not None
    assert attempts[2]["next_retry_at"] is None
    assert all(a["duration_ms"] >= 0 for a in attempts)
    # capped exponential backoff: 0.2 s after the first failure, then 0.4 s
    assert requests[1].at - requests[0].at >= 0.2 - 0.02 and requests[2].at - requests[1].at >= 0.4 - 0.02

    scrape = Scrape(client.get("/metrics", headers=role_headers(client, "viewer")).text)
    assert scrape.value("sentinel_hub_webhook_attempts_total", result="http_error") == 2
    assert scrape.value("sentinel_hub_webhook_attempts_total", result="ok") == 1
    assert scrape.value("sentinel_hub_webhook_deliveries_total", outcome="delivered") == 1
    assert scrape.value("sentinel_hub_webhook_deliveries_total", outcome="failed") == 0


# -- which incidents -----------------------------------------------------------------------------

def test_min_severity_filters_and_an_escalation_is_delivered_once_more(
        client: TestClient, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    warning = _webhook(client, f"{receiver.url}/warning", "WARNING")
    critical = _webhook(client, f"{receiver.url}/critical", "CRITICAL")
    emergency = _webhook(client, f"{receiver.url}/emergency", "EMERGENCY")

    _ingest(client, 49.3, second=0)  # WARNING
    first = _wait("the WARNING webhook gets the new incident", lambda: receiver.received("/warning"))
    assert json.loads(first[0].body)["event"] == "incident.created"
    assert _deliveries(client, critical) == [] and _deliveries(client, emergency) == []  # queued together, or not at all

    _ingest(client, 48.8, second=1)  # the same condition, worse: escalated to CRITICAL
    _wait("both webhooks get the escalation",
          lambda: len(receiver.received("/warning")) == 2 and len(receiver.received("/critical")) == 1)
    escalated = json.loads(receiver.received("/warning")[1].body)
    assert escalated["event"] == "incident.escalated" and escalated["incident"]["severity"] == "CRITICAL"
    assert escalated["incident"]["id"] == json.loads(first[0].body)["incident"]["id"]  # one incident, raised
    crossed = json.loads(receiver.received("/critical")[0].body)
    assert crossed["event"] == "incident.escalated" and crossed["incident"]["severity"] == "CRITICAL"

    _ingest(client, 48.8, second=2)  # more of the same: the incident changes (occurrences), its severity does not
    _ingest(client, 49.3, second=3)
    time.sleep(0.5)  # ten of the dispatcher's polls
    assert [len(receiver.received(p)) for p in ("/warning", "/critical", "/emergency")] == [2, 1, 0]
    assert [d["event"] for d in _deliveries(client, warning)] == ["incident.escalated", "incident.created"]
    assert all(d["status"] == "delivered" for d in _deliveries(client, warning) + _deliveries(client, critical))


def test_a_receiver_that_never_accepts_fails_after_the_last_attempt(
        client: TestClient, receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(*[503] * 10)
    hook = _webhook(client, receiver.url)
    _ingest(client, 48.8)
    failed = _wait("the delivery fails", lambda: [d for d in _deliveries(client, hook) if d["status"] == "failed"])
    assert [a["status_code"] for a in failed[0]["attempts"]] == [503] * FAST.max_attempts
    assert failed[0]["attempts"][-1]["next_retry_at"] is None and failed[0]["next_attempt_at"] is None
    time.sleep(0.6)  # longer than the capped backoff: nothing more is sent
    assert len(receiver.received()) == FAST.max_attempts
    scrape = Scrape(client.get("/metrics", headers=ADMIN).text)
    assert scrape.value("sentinel_hub_webhook_deliveries_total", outcome="failed") == 1
    assert scrape.value("sentinel_hub_webhook_attempts_total", result="http_error") == FAST.max_attempts


# -- a dead receiver -----------------------------------------------------------------------------

def test_a_hanging_receiver_slows_neither_ingest_nor_other_receivers(
        storage: Storage, receivers: Callable[..., Receiver]) -> None:
    timeout_s = 8.0
    hanging, healthy = receivers(hang=True), receivers()
    with _app(storage, WebhookSettings(poll_s=0.05, timeout_s=timeout_s, backoff_s=0.2, backoff_cap_s=0.4)) as client:
        _webhook(client, hanging.url)
        ok = _webhook(client, healthy.url)
        _ingest(client, 49.3, device="FEEDER-A")
        _wait("the hanging receiver holds a delivery", lambda: hanging.received())
        started = time.monotonic()
        took = [_ingest(client, 48.8, device=f"FEEDER-{n}") for n in range(5)]  # five more incidents
        assert max(took) < 2.0, took  # a send waits up to 8 s on that receiver; ingest never does
        _wait("the healthy receiver gets all six", lambda: len(healthy.received()) == 6, timeout_s=timeout_s)
        assert time.monotonic() - started < timeout_s - 2.0  # well before the hanging one's first timeout
        assert not any(a["error"] for d in _deliveries(client, ok) for a in d["attempts"])
        assert len(hanging.received()) <= 2  # its own slots only (two per webhook)


# -- restarts ------------------------------------------------------------------------------------

def test_a_restart_neither_loses_a_pending_delivery_nor_sends_it_twice(
        storage: Storage, receivers: Callable[..., Receiver]) -> None:
    down = receivers()
    port, url = down.port, down.url
    down.close()  # the port is closed: connections are refused
    slow = WebhookSettings(poll_s=0.05, timeout_s=1.0, backoff_s=0.3, backoff_cap_s=0.3, max_attempts=100)
    with _app(storage, slow) as client:
        hook = _webhook(client, url)
        _ingest(client, 49.3)
        pending = _wait("two attempts refused", lambda: [d for d in _deliveries(client, hook)
                                                         if len(d["attempts"]) >= 2])
    assert pending[0]["status"] == "pending" and pending[0]["attempts"][0]["status_code"] is None
    assert pending[0]["attempts"][0]["error"]  # why: the connection was refused

    up = receivers(port=port)
    with _app(storage, slow) as client:
        _wait("the receiver, up again, gets it", lambda: up.received())
        time.sleep(0.5)  # ten polls: the incident is read again (the look-back), and not queued again
        log = _deliveries(client, hook)
        assert len(log) == 1 and log[0]["status"] == "delivered" and log[0]["event"] == "incident.created"
        assert log[0]["attempts"][-1]["status_code"] == 200 and len(log[0]["attempts"]) >= 3
    assert len(up.received()) == 1 and up.received()[0].headers["x-sentinel-delivery"] == log[0]["id"]


def test_incidents_held_before_webhooks_began_are_not_news(storage: Storage,
                                                          receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    with _app(storage, None) as client:  # no dispatcher: an incident happens
        _ingest(client, 48.8, device="FEEDER-OLD")
    with _app(storage) as client:
        _webhook(client, receiver.url)
        _ingest(client, 49.3, device="FEEDER-NEW")
        _wait("the new incident arrives", lambda: receiver.received())
        time.sleep(0.3)
    bodies = [json.loads(r.body) for r in receiver.received()]
    assert [(b["event"], b["incident"]["device_id"]) for b in bodies] == [("incident.created", "FEEDER-NEW")]


# -- the routes ----------------------------------------------------------------------------------

def test_secrets_are_shown_once_and_never_listed(client: TestClient) -> None:
    r = client.post("/webhooks", headers=ADMIN, json={"url": "https://receiver.example/hook"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 40 and made["min_severity"] == "WARNING"
    given = _webhook(client, "http://127.0.0.1:9/given", "CRITICAL", secret=SECRET)
    listing = client.get("/webhooks", headers=ADMIN)
    assert listing.status_code == 200
    assert {h["id"] for h in listing.json()["webhooks"]} == {made["id"], given}
    assert made["secret"] not in listing.text and SECRET not in listing.text
    assert all("secret" not in h for h in listing.json()["webhooks"])
    audit = client.get("/audit", params={"action": "webhook."}, headers=ADMIN).json()["entries"]
    assert {(e["action"], e["target"]) for e in audit} == {("webhook.create", made["id"]), ("webhook.create", given)}
    assert made["secret"] not in json.dumps(audit) and SECRET not in json.dumps(audit)


def test_delete_stops_a_webhook_and_is_audited(client: TestClient) -> None:
    hook = _webhook(client, "http://127.0.0.1:9/")
    r = client.delete(f"/webhooks/{hook}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["id"] == hook
    assert client.get("/webhooks", headers=ADMIN).json()["webhooks"] == []
    assert client.delete(f"/webhooks/{hook}", headers=ADMIN).status_code == 404
    r = client.get(f"/webhooks/{hook}/deliveries", headers=ADMIN)
    assert r.status_code == 404 and hook in r.json()["detail"]
    actions = [e["action"] for e in client.get("/audit", params={"target": hook}, headers=ADMIN).json()["entries"]]
    assert actions == ["webhook.delete", "webhook.create"]


@pytest.mark.parametrize(("body", "named"), [
    ({"url": "ftp://receiver.example/hook"}, "url"),
    ({"url": "http://user:password@receiver.example/hook"}, "user name or password"),
    ({"url": "http://receiver.example:99999/hook"}, "url"),
    ({"url": "https://receiver.example/", "min_severity": "SEVERE"}, "min_severity"),
    ({"url": "https://receiver.example/", "secret": "short"}, "secret"),
    ({"url": "https://receiver.example/", "extra": 1}, "extra"),
])
def test_bad_webhooks_are_refused_naming_the_field(client: TestClient, body: dict[str, Any], named: str) -> None:
    r = client.post("/webhooks", headers=ADMIN, json=body)
    assert r.status_code == 400 and named in r.json()["detail"], r.text
    assert client.get("/webhooks", headers=ADMIN).json()["webhooks"] == []


def test_viewers_and_operators_may_not_touch_webhooks(client: TestClient) -> None:
    hook = _webhook(client, "http://127.0.0.1:9/")
    for role in ("viewer", "operator"):
        headers = role_headers(client, role)
        for method, path in (("POST", "/webhooks"), ("GET", "/webhooks"), ("DELETE", f"/webhooks/{hook}"),
                             ("GET", f"/webhooks/{hook}/deliveries")):
            r = client.request(method, path, headers=headers, json={"url": "http://127.0.0.1:9/"})
            assert r.status_code == 403 and "needs admin" in r.json()["detail"], (role, method, path, r.text)
    assert [h["id"] for h in client.get("/webhooks", headers=ADMIN).json()["webhooks"]] == [hook]


def test_webhook_settings_are_checked() -> None:
    assert [FAST.retry_delay(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.4, None]
    assert [WebhookSettings().retry_delay(n) for n in (1, 2, 9, 10, 11, 12)] == [1, 2, 256, 300, 300, None]
    with pytest.raises(ValueError, match="backoff_cap_s"):
        WebhookSettings(backoff_s=10, backoff_cap_s=1)
    with pytest.raises(ValueError, match="max_attempts"):
        WebhookSettings(max_attempts=0)
