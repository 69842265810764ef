"""The OPC-UA driver against real asyncua servers (the simulator's) on 127.0.0.1.

One server per module serves every test that does not restart it (asyncua takes about two seconds
to build a server's standard address space): it runs in a thread of its own, with its own event
loop, and offers security None, Basic256Sha256 Sign and SignAndEncrypt, anonymous, username and
certificate users, with certificates the tests make. The restart test has its own server.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import protocols.opcua.source as source_mod
from protocols.config import ConfigError, parse_config
from protocols.opcua.config import OpcUaDevice
from protocols.opcua.source import OpcUaPollSource, OpcUaSource, OpcUaSubscribeSource
from protocols.reading import QualityFlag
from protocols.sources import PolledSource, PushedSource, SourceConnectError, Update
from simulator.opcua_server import CertificatePair, OpcUaEndpoint, make_certificate
from tests.conftest import REPO, free_port

pytestmark = [
    pytest.mark.timeout(60),
    # asyncua's server calls its async data-change callbacks without awaiting them when a node is
    # deleted (the simulator notifies monitored items itself first): its warning, not ours.
    pytest.mark.filterwarnings("ignore:coroutine 'MonitoredItemService.datachange_callback' was never awaited"),
]

USER, PASSWORD, PASSWORD_ENV = "operator", "correct horse battery", "SENTINEL_TEST_OPCUA_PASSWORD"
ALL_SECURITY = [("None", "None"), ("Basic256Sha256", "Sign"), ("Basic256Sha256", "SignAndEncrypt")]

RTU = [  # what the server serves for device RTU-7: node ids of every kind, and a browse path
    {"metric": "voltage_l1", "node_id": "ns=2;s=Feeder.F12.VoltageL1", "unit": "kV", "scale": 0.001},
    {"metric": "current_l1", "browse_path": "0:Objects/2:Feeder/2:CurrentL1", "unit": "A"},
    {"metric": "frequency", "node_id": "nsu=urn:vendor:rtu;s=Frequency", "unit": "Hz"},
    {"metric": "oil_temperature", "node_id": "ns=2;i=5001", "unit": "degC", "scale": 0.1, "offset": -40.0},
]
FAULTS = [{"metric": m, "node_id": f"ns=2;s=Faults.{m}"} for m in ("a", "b", "c")]
BAND = [{"metric": "voltage_l2", "node_id": "ns=2;s=Deadband.V2", "unit": "kV", "scale": 0.001, "deadband": 0.05}]


def device(points: list[dict], url: str, device_id: str = "RTU-7", **kw: Any) -> OpcUaDevice:
    return msgspec.convert({"id": device_id, "url": url, "points": points, **kw}, OpcUaDevice)


class ServerThread:
    """An OpcUaEndpoint running in a thread with its own event loop; ``call`` runs a coroutine there."""

    def __init__(self, endpoint: OpcUaEndpoint) -> None:
        self.endpoint = endpoint
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="opcua-test-server", daemon=True)
        self.thread.start()
        self.call(endpoint.start())

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.endpoint.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificatePair]:
    d = tmp_path_factory.mktemp("opcua-certs")
    return {
        "client": make_certificate(d, "edge", "urn:smartgrid-sentinel:edge:test"),
        "user": make_certificate(d, "engineer", "urn:smartgrid-sentinel:user:engineer"),
        "rogue": make_certificate(d, "rogue", "urn:rogue:client"),
    }


@pytest.fixture(scope="module")
def server(certs: dict[str, CertificatePair]) -> Iterator[ServerThread]:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    endpoint = OpcUaEndpoint(
        url,
        [device(RTU, url), device(FAULTS, url, "FAULTS"), device(BAND, url, "BAND")],
        security=ALL_SECURITY, users={USER: PASSWORD}, user_certificates=[certs["user"].certificate],
        anonymous=True, trusted_clients=[certs["client"].certificate],
    )
    st = ServerThread(endpoint)
    st.call(endpoint.write("RTU-7", {"voltage_l1": 11_050.0, "current_l1": 312.5, "frequency": 50.02,
                                     "oil_temperature": 1035.0}))
    st.call(endpoint.write("FAULTS", {"a": 1.0, "b": 2.0, "c": 3.0}))
    st.call(endpoint.write("BAND", {"voltage_l2": 11_000.0}))
    yield st
    st.close()


def secure(certs: dict[str, CertificatePair], mode: str, **kw: str) -> dict:
    c = certs["client"]
    return {"policy": "Basic256Sha256", "mode": mode, "certificate": str(c.certificate),
            "private_key": str(c.private_key), **kw}


async def collect(src: OpcUaSubscribeSource, until: Any, timeout_s: float = 10.0) -> list[Update]:
    """Updates from stream() until ``until(updates)`` holds or ``timeout_s`` runs out."""
    updates: list[Update] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for u in src.stream():
                updates.append(u)
                if until(updates):
                    break
    except TimeoutError:
        pass
    finally:
        await src.close()
    return updates


def latest(updates: list[Update], n: int) -> tuple[np.ndarray, np.ndarray]:
    values, flags = np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    for u in updates:
        values[u.index], flags[u.index] = u.values, u.flags
    return values, flags


# -- the two kinds of source ------------------------------------------------------------------------


def test_mode_picks_the_source_kind() -> None:
    url = "opc.tcp://127.0.0.1:4840"
    poll, sub = OpcUaSource(device(RTU, url, mode="poll")), OpcUaSource(device(RTU, url))
    assert isinstance(poll, OpcUaPollSource) and isinstance(poll, PolledSource) and not isinstance(poll, PushedSource)
    assert isinstance(sub, OpcUaSubscribeSource) and isinstance(sub, PushedSource) and not isinstance(sub, PolledSource)
    assert poll.poll_interval_s == 2.0 and poll.endpoint == url and [p.metric for p in poll.points][:2] == [
        "voltage_l1", "current_l1"]


def test_poll_reads_every_point_scaled_in_one_session(server: ServerThread) -> None:
    url = server.endpoint.url
    points = [*RTU, {"metric": "ghost", "node_id": "ns=2;s=Nope"}, {"metric": "lost", "browse_path": "0:Objects/2:Nope"}]
    src = OpcUaSource(device(points, url, mode="poll"))

    async def main() -> tuple:
        first = await src.read()
        session = src._session
        second = await src.read()
        same = src._session is session
        await src.close()
        return first, second, same

    (values, flags), (values2, _), same = asyncio.run(main())
    np.testing.assert_allclose(values[:4], [11.05, 312.5, 50.02, 1035.0 * 0.1 - 40.0])
    assert flags[:4].tolist() == [0, 0, 0, 0]
    assert math.isnan(values[4]) and flags[4] == QualityFlag.INVALID  # a node id the server does not have
    assert math.isnan(values[5]) and flags[5] == QualityFlag.INVALID  # a browse path that leads nowhere
    np.testing.assert_allclose(values2[:4], values[:4])
    assert same  # the session stays open between polls


def test_connection_refused_is_a_connect_error() -> None:
    src = OpcUaSource(device(RTU, f"opc.tcp://127.0.0.1:{free_port()}", mode="poll", timeout_s=0.5))
    with pytest.raises(SourceConnectError) as err:
        asyncio.run(src.read())
    assert err.value.reason == "connection refused" and err.value.device_id == "RTU-7"
    assert err.value.endpoint.startswith("opc.tcp://127.0.0.1:")


def test_subscribe_yields_changes_with_server_timestamps(server: ServerThread) -> None:
    src = OpcUaSource(device(RTU, server.endpoint.url, publishing_interval_s=0.1))
    assert isinstance(src, OpcUaSubscribeSource)
    written: list[float] = []

    async def main() -> list[Update]:
        async def writer() -> None:
            await asyncio.sleep(0.5)
            for k in range(1, 4):
                written.append(time.time())
                await asyncio.to_thread(server.call, server.endpoint.write("RTU-7", {"voltage_l1": 11_050.0 + k}))
                await asyncio.sleep(0.3)

        task = asyncio.create_task(writer())
        updates = await collect(src, lambda us: sum(0 in u.index.tolist() for u in us) >= 4)
        await task
        await asyncio.to_thread(server.call, server.endpoint.write("RTU-7", {"voltage_l1": 11_050.0}))
        return updates

    updates = asyncio.run(main())
    first = updates[0]
    assert sorted(first.index.tolist()) == [0, 1, 2, 3]  # the initial values of every point
    volts = [(float(t), float(v)) for u in updates for t, i, v in zip(u.ts, u.index, u.values) if i == 0]
    np.testing.assert_allclose([v for _, v in volts], [11.05, 11.051, 11.052, 11.053])
    for (t, _), w in zip(volts[1:], written):
        assert w - 0.05 <= t <= w + 1.0  # the server's source timestamp of the write
    assert all(int(f) == 0 for u in updates for f in u.flags)


def test_deadband_suppresses_small_changes(server: ServerThread) -> None:
    src = OpcUaSource(device(BAND, server.endpoint.url, "BAND", publishing_interval_s=0.1))
    # deadband 0.05 kV with scale 0.001: the server filters changes of 50 V or less
    steps = [11_010.0, 11_030.0, 11_100.0, 11_120.0, 11_000.0]

    async def main() -> list[Update]:
        async def writer() -> None:
            await asyncio.sleep(0.4)
            for v in steps:
                await asyncio.to_thread(server.call, server.endpoint.write("BAND", {"voltage_l2": v}))
                await asyncio.sleep(0.25)

        task = asyncio.create_task(writer())
        updates = await collect(src, lambda us: False, timeout_s=0.4 + 0.25 * len(steps) + 0.5)
        await task
        return updates

    seen = [float(v) for u in asyncio.run(main()) for v in u.values]
    np.testing.assert_allclose(seen, [11.0, 11.1, 11.0])  # +10, +30 (from 11000), +20 (from 11100): filtered


def test_bad_and_deleted_nodes_mark_only_their_points(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_mod, "RETRY_DEAD_S", 0.5)
    ep = server.endpoint
    src = OpcUaSource(device(FAULTS, ep.url, "FAULTS", publishing_interval_s=0.1))
    timeline: list[tuple[str, float]] = []

    async def main() -> list[Update]:
        async def faults() -> None:
            def mark(what: str) -> None:
                timeline.append((what, time.time()))

            await asyncio.sleep(0.5)
            mark("breaking")
            await asyncio.to_thread(server.call, ep.set_status("FAULTS", "a", "BadSensorFailure"))
            await asyncio.to_thread(server.call, ep.delete_node("FAULTS", "b"))
            for k in range(3):  # the healthy point goes on changing meanwhile
                await asyncio.sleep(0.25)
                await asyncio.to_thread(server.call, ep.write("FAULTS", {"c": 10.0 + k}))
            await asyncio.sleep(0.25)
            mark("repairing")
            await asyncio.to_thread(server.call, ep.set_status("FAULTS", "a", None))
            await asyncio.to_thread(server.call, ep.restore_node("FAULTS", "b"))

        task = asyncio.create_task(faults())

        def repaired(us: list[Update]) -> bool:
            if len(timeline) < 2:
                return False
            values, flags = latest(us, 3)
            return flags.tolist() == [0, 0, 0] and values[0] == 1.0 and values[1] == 2.0

        updates = await collect(src, repaired, timeout_s=8.0)
        await task
        return updates

    updates = asyncio.run(main())
    broken_at = timeline[0][1]
    during = [u for u in updates if u.ts.min() >= broken_at and u.ts.max() < timeline[1][1]]
    values, flags = latest(during, 3)
    assert math.isnan(values[0]) and flags[0] == QualityFlag.INVALID  # BadSensorFailure
    assert math.isnan(values[1]) and flags[1] == QualityFlag.INVALID  # BadNodeIdUnknown: the node is gone
    c = [float(v) for u in during for i, v in zip(u.index, u.values) if i == 2]
    assert c == [10.0, 11.0, 12.0]  # ... and the other point never stopped
    values, flags = latest(updates, 3)
    assert values.tolist() == [1.0, 2.0, 12.0] and flags.tolist() == [0, 0, 0]  # back, by itself


# -- security and identity --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["None", "Sign", "SignAndEncrypt"])
def test_security_modes(server: ServerThread, certs: dict[str, CertificatePair], mode: str) -> None:
    security = {} if mode == "None" else secure(certs, mode)
    src = OpcUaSource(device(RTU, server.endpoint.url, mode="poll", security=security))

    async def main() -> tuple:
        try:
            values, flags = await src.read()
            assert src._session is not None
            policy = src._session.client.security_policy
            return values, flags, policy.URI, policy.Mode
        finally:
            await src.close()

    values, flags, uri, sec_mode = asyncio.run(main())
    assert flags[:4].tolist() == [0, 0, 0, 0] and values[1] == 312.5
    assert uri.endswith("#None" if mode == "None" else "#Basic256Sha256")
    assert sec_mode.name == ("None_" if mode == "None" else mode)


def test_subscribe_over_sign_and_encrypt_with_a_pinned_server_certificate(
        server: ServerThread, certs: dict[str, CertificatePair]) -> None:
    pinned = str(server.endpoint.certificate.certificate)
    src = OpcUaSource(device(RTU, server.endpoint.url, security=secure(certs, "SignAndEncrypt",
                                                                          server_certificate=pinned)))
    updates = asyncio.run(collect(src, lambda us: True))
    assert sorted(updates[0].index.tolist()) == [0, 1, 2, 3]


def test_untrusted_client_certificate_is_refused(server: ServerThread, certs: dict[str, CertificatePair]) -> None:
    rogue = certs["rogue"]
    security = {"policy": "Basic256Sha256", "mode": "Sign", "certificate": str(rogue.certificate),
                "private_key": str(rogue.private_key)}
    src = OpcUaSource(device(RTU, server.endpoint.url, mode="poll", security=security))
    with pytest.raises(SourceConnectError) as err:
        asyncio.run(src.read())
    assert "does not trust this client's certificate" in err.value.reason, err.value.reason


def test_username_identity(server: ServerThread, monkeypatch: pytest.MonkeyPatch,
                           certs: dict[str, CertificatePair]) -> None:
    dev = device(RTU, server.endpoint.url, mode="poll", username=USER, password_env=PASSWORD_ENV,
                 security=secure(certs, "SignAndEncrypt"))

    async def read() -> tuple:
        src = OpcUaSource(dev)
        try:
            return await src.read()
        finally:
            await src.close()

    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(SourceConnectError) as err:
        asyncio.run(read())
    assert err.value.reason == f"environment variable {PASSWORD_ENV} (the password of user 'operator') is not set"

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    _, flags = asyncio.run(read())
    assert flags[:4].tolist() == [0, 0, 0, 0]

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(SourceConnectError) as err:
        asyncio.run(read())
    assert err.value.reason == ("the server rejected user 'operator' (wrong password, or unknown user): "
                                "BadUserAccessDenied")


def test_certificate_identity(server: ServerThread, certs: dict[str, CertificatePair]) -> None:
    user = certs["user"]
    src = OpcUaSource(device(RTU, server.endpoint.url, mode="poll", security=secure(certs, "Sign"),
                             identity_certificate=str(user.certificate), identity_private_key=str(user.private_key)))

    async def main() -> tuple:
        try:
            return await src.read()
        finally:
            await src.close()

    _, flags = asyncio.run(main())
    assert flags[:4].tolist() == [0, 0, 0, 0]


# -- the edge survives a server restart -------------------------------------------------------------


def test_server_restart_edge_recreates_session_and_subscription(tmp_path: Path) -> None:
    """The edge daemon, with one subscribing and one polling OPC-UA device, and a hub that is down."""
    from edge.daemon import EdgeDaemon

    url = f"opc.tcp://127.0.0.1:{free_port()}"
    points = RTU[:2]
    text = f"""
[identity]
edge_id = "edge-opcua"
substation = "OPCUA-S1"

[hub]
url = "http://127.0.0.1:{free_port()}"
sync_interval_s = 0.5

[[devices]]
protocol = "opcua"
id = "RTU-SUB"
url = "{url}"
publishing_interval_s = 0.1
timeout_s = 0.5
points = [
  {{ metric = "voltage_l1", node_id = "ns=2;s=Feeder.F12.VoltageL1", unit = "kV", scale = 0.001 }},
  {{ metric = "current_l1", browse_path = "0:Objects/2:Feeder/2:CurrentL1", unit = "A" }},
]

[[devices]]
protocol = "opcua"
id = "RTU-POLL"
url = "{url}"
mode = "poll"
poll_interval_s = 0.3
timeout_s = 0.25
points = [
  {{ metric = "voltage_l1", node_id = "ns=2;s=Feeder.F12.VoltageL1", unit = "kV", scale = 0.001 }},
]
"""
    cfg = parse_config(text, "restart.toml")
    buffer = tmp_path / "edge.db"
    endpoint = OpcUaEndpoint(url, [device(points, url, "RTU-SUB")])
    marks: dict[str, float] = {}

    async def main() -> EdgeDaemon:
        async with endpoint:
            await endpoint.write("RTU-SUB", {"voltage_l1": 11_000.0, "current_l1": 300.0})
            daemon = EdgeDaemon(cfg, buffer_path=buffer)
            run = asyncio.create_task(daemon.run())
            stats = daemon.stats.devices
            for k in range(10):  # a second of changing values
                await asyncio.sleep(0.1)
                await endpoint.write("RTU-SUB", {"voltage_l1": 11_000.0 + k})
            assert stats["RTU-SUB"].online and stats["RTU-POLL"].online
            await endpoint.stop()
            marks["down"] = time.time()
            for _ in range(40):
                if not stats["RTU-SUB"].online and not stats["RTU-POLL"].online:
                    break
                await asyncio.sleep(0.1)
            assert stats["RTU-SUB"].online is False and stats["RTU-POLL"].online is False
            await asyncio.sleep(0.5)
            await endpoint.start()
            marks["up"] = time.time()
            for k in range(100):  # values change again; the edge must pick them up by itself
                await asyncio.sleep(0.1)
                await endpoint.write("RTU-SUB", {"voltage_l1": 12_000.0 + k})
                if stats["RTU-SUB"].online and stats["RTU-POLL"].online:
                    break
            marks["back"] = time.time()
            for j in range(1, 6):
                await asyncio.sleep(0.1)
                await endpoint.write("RTU-SUB", {"voltage_l1": 13_000.0 + j})
            await asyncio.sleep(0.3)
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            return daemon

    daemon = asyncio.run(main())
    for dev_id in ("RTU-SUB", "RTU-POLL"):
        health = daemon.stats.devices[dev_id]
        assert health.online is True and health.failures >= 1, health
    # the listener backs off 0.5-1 s, 1-2 s, 2-4 s after successive failures while the server is down
    assert marks["back"] - marks["up"] < 6.0
    db = sqlite3.connect(buffer)
    after = db.execute("SELECT value FROM readings WHERE device_id = 'RTU-SUB' AND metric = 'voltage_l1' "
                       "AND ts > ? ORDER BY ts", (marks["up"],)).fetchall()
    assert len(after) >= 5 and after[-1][0] == pytest.approx(13.005)  # the new subscription delivers
    polled = db.execute("SELECT count(*) FROM readings WHERE device_id = 'RTU-POLL' AND ts > ?",
                        (marks["up"],)).fetchone()[0]
    assert polled >= 2
    events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert events >= 4  # down and back, for each device


# -- configuration ----------------------------------------------------------------------------------


FULL = """
[identity]
edge_id = "edge-1"
substation = "S1"

[hub]
url = "http://127.0.0.1:8000"

"""


def test_sample_config_loads_as_part_of_a_full_config() -> None:
    sample = (REPO / "protocols" / "opcua" / "sample.toml").read_text()
    cfg = parse_config(FULL + sample, "sample.toml")
    devices = [d for d in cfg.devices if isinstance(d, OpcUaDevice)]
    assert devices and all(d.points for d in devices)
    for d in devices:  # and each makes a source of the right kind
        src = OpcUaSource(d)
        assert isinstance(src, PolledSource if d.mode == "poll" else PushedSource)


@pytest.mark.parametrize(
    ("device_toml", "path", "message"),
    [
        ('points = [{ metric = "v", node_id = "ns=2;q=Nope" }]', "devices[0].points[0]", "is not an OPC-UA node id"),
        ('points = [{ metric = "v", browse_path = "Objects/Feeder" }]', "devices[0].points[0]",
         "is not <namespace index>:<browse name>"),
        ('points = [{ metric = "v", node_id = "i=1", browse_path = "0:Objects" }]', "devices[0].points[0]",
         "give exactly one of node_id and browse_path"),
        ('points = [{ metric = "v", node_id = "ns=2;s=A" }, { metric = "w", node_id = "ns=2;s=A" }]', "devices[0]",
         "reads the same node as points[0]"),
        ('mode = "poll"\npoints = [{ metric = "v", node_id = "ns=2;s=A", deadband = 0.1 }]', "devices[0]",
         "points[0].deadband is for mode subscribe"),
        ('mode = "poll"\npoll_interval_s = 1.0\ntimeout_s = 1.0\npoints = [{ metric = "v", node_id = "i=1" }]',
         "devices[0]", "timeout_s (1.0) must be shorter than poll_interval_s (1.0)"),
        ('username = "op"\npoints = [{ metric = "v", node_id = "i=1" }]', "devices[0]", "username needs password_env"),
        ('security = { policy = "Basic256Sha256", mode = "None" }\npoints = [{ metric = "v", node_id = "i=1" }]',
         "devices[0].security", "policy None goes with mode None"),
        ('bogus = 1\npoints = [{ metric = "v", node_id = "i=1" }]', "devices[0].bogus", "unknown key"),
    ],
)
def test_config_errors_name_the_key(device_toml: str, path: str, message: str) -> None:
    text = FULL + f'[[devices]]\nprotocol = "opcua"\nid = "D"\nurl = "opc.tcp://127.0.0.1:4840"\n{device_toml}\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.toml")
    assert err.value.path == path and message in err.value.message, str(err.value)


def test_simulator_hook_serves_the_configs_opcua_devices_from_values_for() -> None:
    """What simulator.runner calls: every OPC-UA device of the configs, values from values_for()."""
    from simulator.opcua_server import OpcUaSimulator

    url = f"opc.tcp://127.0.0.1:{free_port()}"
    text = FULL + f"""
[[devices]]
protocol = "opcua"
id = "RTU-7"
url = "{url}"
mode = "poll"
points = [{{ metric = "voltage_l1", node_id = "ns=2;s=Feeder.F12.VoltageL1", unit = "kV" }},
          {{ metric = "current_l1", browse_path = "0:Objects/2:Feeder/2:CurrentL1", unit = "A" }}]
"""
    cfg = parse_config(text, "hook.toml")
    t0 = time.monotonic()
    values_for = lambda device_id: {"voltage_l1": 11.0 + round(time.monotonic() - t0, 1), "current_l1": math.nan}

    async def main() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        async with OpcUaSimulator([cfg], values_for, tick_s=0.05) as sim:
            src = OpcUaSource(cfg.devices[0])
            try:
                first, flags = await src.read()
                await asyncio.sleep(0.3)
                second, _ = await src.read()
            finally:
                await src.close()
            return sim.endpoints, first, second, flags

    endpoints, first, second, flags = asyncio.run(main())
    assert endpoints == [f"opcua {url} (None) devices RTU-7"]
    assert 11.0 <= first[0] < second[0]  # refreshed every tick
    assert math.isnan(first[1]) and flags[1] == QualityFlag.INVALID  # a missing sample: BadSensorFailure


def test_a_server_that_never_answers_cannot_hang_the_source() -> None:
    """TCP accepted, then silence: both kinds of source give up within their bounds."""

    async def main() -> list[tuple[str, float]]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until the client goes away
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        url = f"opc.tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        out = []
        try:
            for mode in ("poll", "subscribe"):
                src = OpcUaSource(device(RTU, url, mode=mode, timeout_s=0.3))
                started = time.monotonic()
                with pytest.raises(SourceConnectError) as err:
                    if isinstance(src, OpcUaPollSource):
                        await src.read()
                    else:
                        async for _ in src.stream():
                            pass
                await src.close()
                out.append((err.value.reason, time.monotonic() - started))
        finally:
            server.close()
        return out

    for reason, elapsed in asyncio.run(main()):
        assert reason.startswith("no answer while connecting") and elapsed < 4 * 0.3 + 0.5, (reason, elapsed)
