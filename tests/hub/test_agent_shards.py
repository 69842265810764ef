"""The agents split by substation (``sentinel hub agents --shard I/N``): each shard sees its own
substations, the shards together all of them, each incident is raised once, and two processes of
one shard run each cycle once (the shard's leader lock)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from hub.insights.agent_inputs import EPISODES_KIND, AgentOutput, AgentSettings, run_anomaly_detector, run_grid_monitor
from hub.insights.elsewhere import AgentsElsewhere
from hub.insights.orchestrator import Orchestrator, OrchestratorSettings
from hub.insights.shards import SHARDED_AGENTS, Shard, shard_of
from hub.site import FeederSite, SiteConfig
from hub.storage import open_storage
from hub.storage.base import Storage
from protocols.otlog import OtLogEvent
from protocols.reading import Reading

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)
SUBSTATIONS = [f"SUB-{k:02d}" for k in range(6)]
@pytest.fixture
def store(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    try:
        yield s
    finally:
        s.close()


def _swells(substations: list[str]) -> list[Reading]:
    """Five minutes of a feeder's voltage at each substation, the last 100 s at 1.17 pu: one
    voltage swell (grid monitor, CRITICAL) per substation."""
    return [Reading(ts=NOW - timedelta(seconds=300 - i), substation=sub, device_id=f"FEEDER-{sub}",
                    metric="voltage_l1", value=11.0 if i < 200 else 12.9, unit="kV")
            for sub in substations for i in range(300)]


def _failed_logins(substation: str) -> list[OtLogEvent]:
    """Four failed logins in a few minutes: the cyber sentinel's brute-force alert."""
    return [OtLogEvent(ts=NOW - timedelta(minutes=4 - i), kind="auth", action="login", substation=substation,
                       device_id="RTU-1", result="failure", source="192.168.1.57", user="admin") for i in range(4)]


def _settings(shard: str | None, **kw: float) -> OrchestratorSettings:
    return OrchestratorSettings(agents=AgentSettings(shard=None if shard is None else Shard.parse(shard)), **kw)


def test_a_substation_belongs_to_one_shard_by_a_stable_hash() -> None:
    # the MD5 of the id: the same on every machine and every run (Python's hash() of a str is salted),
    # and in the databases (tests/hub/test_rollups.py)
    assert [shard_of(s, 4) for s in ("NAIROBI-S1", "MOMBASA-S1", "KISUMU-S1")] == [3, 1, 0]
    for n in (1, 2, 3, 7):
        owners = [[i for i in range(n) if Shard(i, n).holds(s)] for s in SUBSTATIONS]
        assert all(len(o) == 1 for o in owners)  # exactly one shard each
    assert Shard.parse(" 1 / 3 ") == Shard(1, 3)
    for text, why in (("3/2", "--shard: 3/2: the shard I must be 0 to 1"), ("0/0", "N must be 1 or more"),
                      ("x", "--shard: I/N"), ("-1/2", "I/N"), ("1/2/3", "I/N")):
        with pytest.raises(ValueError, match=why):
            Shard.parse(text)
    assert Shard(0, 1).lock_name == "agents" and Shard(1, 4).lock_name == "agents.shard-1-of-4"


def test_window_reads_of_a_shard_are_of_its_substations_only(store: Storage) -> None:
    store.insert_readings(_swells(SUBSTATIONS), "test")
    start, end = NOW - timedelta(minutes=10), NOW + timedelta(seconds=1)
    assert sorted(store.devices_between(start, end)) == [(s, f"FEEDER-{s}") for s in SUBSTATIONS]
    some = SUBSTATIONS[1:3]
    rows = [r for chunk in store.iter_window_rows(start, end, 100, substations=some) for r in chunk]
    assert len(rows) == 600 and all(any(s in r[1] for s in some) for r in rows)
    assert list(store.iter_window_rows(start, end, substations=[])) == []


def test_two_shards_split_the_fleet_and_raise_each_incident_once(db_url: str, store: Storage) -> None:
    store.insert_readings(_swells(SUBSTATIONS), "test")
    cyber_at = next(s for s in SUBSTATIONS if shard_of(s, 2) == 1)  # seen by shard 0, which runs the cyber sentinel
    store.add_ot_logs(_failed_logins(cyber_at), "test")
    mine = {i: {s for s in SUBSTATIONS if shard_of(s, 2) == i} for i in (0, 1)}
    assert mine[0] and mine[1], mine  # the fleet is split, not all in one shard

    async def both() -> tuple[list, list, dict, list]:
        # two "processes": each its own storage and orchestrator, their cycles at the same time
        stores = [open_storage(db_url) for _ in range(2)]
        orchs = [Orchestrator(st, _settings(f"{i}/2"), share_status=True) for i, st in enumerate(stores)]
        try:
            runs = await asyncio.gather(*(o.run_once(NOW) for o in orchs))
            await asyncio.gather(*(o.run_once(NOW + timedelta(seconds=1)) for o in orchs))
            # what a hub serving with --agents off answers on GET /agents: one status per agent
            elsewhere = AgentsElsewhere(store, db_url, OrchestratorSettings())
            task = asyncio.create_task(elsewhere.run())
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return list(orchs[0].runners), list(orchs[1].runners), dict(zip((0, 1), runs)), elsewhere.status()
        finally:
            for o, st in zip(orchs, stores):
                await o.aclose()
                st.close()

    names0, names1, runs, served = asyncio.run(both())
    assert sorted(names0) == sorted(["grid_monitor", "anomaly_detector", "demand_forecaster",
                                     "maintenance_predictor", "cyber_sentinel"])
    assert sorted(names1) == sorted(SHARDED_AGENTS)  # the cyber sentinel looks across substations: shard 0 only
    for i in (0, 1):
        grid = next(st for st in runs[i] if st.name == "grid_monitor")
        assert grid.state == "ok", grid
        assert set(grid.summary["status"]) == mine[i]  # each shard sees exactly its substations
        assert grid.findings == len(mine[i])
    incidents = store.list_incidents(limit=1000)
    swells = [i for i in incidents if i.agent == "grid_monitor"]
    assert sorted(i.substation for i in swells) == SUBSTATIONS  # together all, each once
    assert all(i.occurrences == 2 for i in swells)  # the second cycle updated them, raised nothing new
    cyber = [i for i in incidents if i.agent == "cyber_sentinel"]
    assert [(i.type, i.substation) for i in cyber] == [("brute_force", cyber_at)]
    assert {d.key for d in store.latest_documents("grid_status")} == set(SUBSTATIONS)
    # the statuses of both shards are stored apart, not one over the other
    keys = {d.key for d in store.latest_documents("agent_status")}
    assert {"grid_monitor#shard 0/2", "grid_monitor#shard 1/2", "cyber_sentinel#shard 0/2"} <= keys
    assert not any(k.startswith("cyber_sentinel#shard 1") for k in keys)
    by_name = {st.name: st for st in served}
    assert len(served) == 5 and all(st.state == "ok" for st in served), served
    assert by_name["grid_monitor"].findings == len(SUBSTATIONS)  # both shards' findings, added up
    assert "shard 0/2" in by_name["grid_monitor"].process and "shard 1/2" in by_name["grid_monitor"].process
    assert by_name["cyber_sentinel"].process.endswith("shard 0/2")
    assert not any("same N" in st.last_error for st in served)


def test_processes_that_split_the_fleet_differently_are_named_on_every_status(db_url: str, store: Storage,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    """One agents process with --shard 0/2 and another without: each runs its share as if alone (the
    unsplit one judges every substation again), so GET /agents says so on every agent's status."""
    store.insert_readings(_swells(SUBSTATIONS), "test")

    async def both() -> list:
        stores = [open_storage(db_url) for _ in range(2)]
        orchs = [Orchestrator(st, _settings(shard), share_status=True) for st, shard in zip(stores, ("0/2", None))]
        try:
            await asyncio.gather(*(o.run_once(NOW) for o in orchs))
            elsewhere = AgentsElsewhere(store, db_url, OrchestratorSettings())
            task = asyncio.create_task(elsewhere.run())
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return elsewhere.status()
        finally:
            for o, st in zip(orchs, stores):
                await o.aclose()
                st.close()

    with caplog.at_level(logging.WARNING, logger="hub.insights.elsewhere"):
        served = asyncio.run(both())
    assert len(served) == 5
    for st in served:
        assert "split the fleet differently (unsplit, 2 shards)" in st.last_error, st
        assert "must use the same N in --shard I/N" in st.last_error
    assert sum("split the fleet differently" in r.getMessage() for r in caplog.records) == 1


def _frequency_event(substations: list[str], at_s: float = 1200.0) -> list[Reading]:
    """Twenty minutes of each substation's bus frequency at 1 Hz, scored by its edge; from ``at_s``
    seconds before NOW, a minute of steps (score 0.93) at every one of them: one grid-wide event."""
    return [Reading(ts=NOW - timedelta(seconds=1200 - i), substation=sub, device_id=f"BUS-{sub}",
                    metric="frequency", value=49.6 if hit else 50.0, unit="Hz",
                    anomaly_score=0.93 if hit else 0.1, anomaly_type="step" if hit else None)
            for sub in substations for i in range(1200)
            for hit in [1200 - at_s <= i < 1260 - at_s]]


def test_the_anomaly_detector_split_correlates_a_grid_wide_event_across_shards_once(store: Storage) -> None:
    """Each shard finds its own substations' episodes; shard 1 stores them, shard 0 correlates them
    with its own: one grid-wide incident naming every substation, as the unsplit detector raises.
    A lone episode in shard 1's substation is raised once, by shard 0. Episodes of a shard whose
    last cycle is too old are left out."""
    lone_at = next(s for s in SUBSTATIONS if shard_of(s, 2) == 1)
    store.insert_readings(_frequency_event(SUBSTATIONS, at_s=600.0), "test")
    store.insert_readings([Reading(ts=NOW - timedelta(seconds=1200 - i), substation=lone_at, device_id="TR-9",
                                   metric="oil_temperature", value=60.0, unit="degC",
                                   anomaly_score=0.9 if 100 <= i < 130 else 0.1,
                                   anomaly_type="spike" if 100 <= i < 130 else None) for i in range(1200)], "test")
    whole = run_anomaly_detector(store, AgentSettings(), NOW)
    assert sorted((f.type, f.facts.get("scope")) for f in whole.findings) == [
        ("anomaly_spike", None), ("correlated_anomaly", "grid")]
    one = run_anomaly_detector(store, AgentSettings(shard=Shard(1, 2)), NOW - timedelta(seconds=20))
    assert one.findings == []  # its episodes are shard 0's to raise
    assert one.summary["episodes"] == sum(shard_of(s, 2) == 1 for s in SUBSTATIONS) + 1
    (doc,) = one.documents
    assert (doc.kind, doc.key) == (EPISODES_KIND, "1/2")
    alone = run_anomaly_detector(store, AgentSettings(shard=Shard(0, 2)), NOW)  # before shard 1 stored any
    (grid,) = [f for f in alone.findings if f.type == "correlated_anomaly"]
    assert set(grid.facts["substations"]) == {s for s in SUBSTATIONS if shard_of(s, 2) == 0}
    store.put_documents(one.documents)
    zero = run_anomaly_detector(store, AgentSettings(shard=Shard(0, 2)), NOW)
    assert msgspec.to_builtins(zero.findings) == msgspec.to_builtins(whole.findings)
    assert zero.summary["shards_heard"] == ["1/2"]
    # what another process stored is read as untrusted: a malformed entry leaves that shard out, named
    bad = msgspec.structs.replace(doc, timestamp=doc.timestamp + timedelta(seconds=1),
                                  body={"episodes": [{**doc.body["episodes"][0], "_start": "soon"}]})
    store.put_documents([bad])
    odd = run_anomaly_detector(store, AgentSettings(shard=Shard(0, 2)), NOW)
    assert odd.summary["shards_heard"] == [] and odd.summary["episodes_from_other_shards"] == 0
    (why,) = odd.summary["unreadable"]
    assert why.startswith("shard 1/2's stored episodes: not anomaly episodes: ") and "$[0]._start" in why, why
    assert len([f for f in odd.findings if f.type == "correlated_anomaly"]) == 1  # its own, as before
    # shard 1's process stopped 10 minutes ago: its last episodes are not correlated again
    late = run_anomaly_detector(store, AgentSettings(shard=Shard(0, 2)), NOW + timedelta(minutes=10))
    assert late.summary["shards_heard"] == [] and not any(f.type == "anomaly_spike" for f in late.findings)


def test_a_shard_weighs_an_adjacent_feeder_in_another_shards_substation(store: Storage) -> None:
    here = next(s for s in SUBSTATIONS if shard_of(s, 2) == 0)
    there = next(s for s in SUBSTATIONS if shard_of(s, 2) == 1)
    store.insert_readings([Reading(ts=NOW - timedelta(seconds=300 - i), substation=sub, device_id=dev,
                                   metric="load_current", value=value, unit="A")
                           for sub, dev, value in ((here, "FEEDER-A", 470.0), (there, "FEEDER-B", 100.0))
                           for i in range(300)], "test")
    site = SiteConfig(feeders={"FEEDER-A": FeederSite(rating=400.0, adjacent=("FEEDER-B",)),
                               "FEEDER-B": FeederSite(rating=400.0)})
    whole = run_grid_monitor(store, AgentSettings(site=site), NOW)
    split = run_grid_monitor(store, AgentSettings(site=site, shard=Shard(0, 2)), NOW)
    other = run_grid_monitor(store, AgentSettings(site=site, shard=Shard(1, 2)), NOW)
    (overload,) = whole.findings
    assert "FEEDER-B (headroom 300 A" in overload.recommendation
    assert [(f.key, f.recommendation) for f in split.findings] == [(overload.key, overload.recommendation)]
    assert set(split.summary["status"]) == {here} and [d.key for d in split.documents] == [here]
    assert set(other.summary["status"]) == {there} and other.findings == []


def test_the_same_shard_twice_runs_each_cycle_once(db_url: str) -> None:
    async def three() -> dict[str, int]:
        counts: dict[str, int] = {}
        stores = [open_storage(db_url) for _ in range(3)]
        orchs = []
        for who, (shard, st) in zip(("a", "b", "other"), zip(("1/2", "1/2", "0/2"), stores)):
            def hook(agent: str, outcome: str, seconds: float | None, who: str = who) -> None:
                counts[who] = counts.get(who, 0) + 1
            orchs.append(Orchestrator(st, _settings(shard, interval_s=0.1, min_gap_s=0.1), on_run=hook,
                                      runners={"grid_monitor": lambda *a: AgentOutput()}))
        tasks = [asyncio.create_task(o.run()) for o in orchs]
        try:
            await asyncio.sleep(1.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            leading = [o.leading for o in orchs]
            for o, st in zip(orchs, stores):
                await o.aclose()
                st.close()
        counts["leading"] = leading  # type: ignore[assignment]
        return counts

    counts = asyncio.run(three())
    leading = counts.pop("leading")
    assert leading[2] is True  # another shard runs beside them
    assert sorted(leading[:2]) == [False, True], leading  # one of the two of shard 1/2 runs, the other stands by
    ran = [w for w in ("a", "b") if counts.get(w)]
    assert len(ran) == 1 and counts["other"] >= 2, counts


def test_a_bad_shard_is_a_usage_error_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    args = ["hub", "agents", "--database", f"sqlite:///{tmp_path}/h.db"]
    cmd = [sys.executable, "-m", "sentinel_cli.main", *args]
    got = subprocess.run([*cmd, "--shard", "3/2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert got.returncode == 2, got.stderr
    assert "argument --shard: 3/2: the shard I must be 0 to 1 when there are 2 shards" in got.stderr, got.stderr
    got = subprocess.run(cmd, cwd=REPO, env={**env, "SENTINEL_AGENT_SHARD": "3/2"}, capture_output=True, text=True,
                         timeout=60)  # the variable is checked the same way
    assert got.returncode == 2 and "SENTINEL_AGENT_SHARD: 3/2: the shard I must be 0 to 1" in got.stderr, got.stderr
    from sentinel_cli.main import main

    for value, why in (("0/0", "argument --shard: 0/0: the number of shards N must be 1 or more"),
                       ("x", "argument --shard: I/N (this process's shard I of N shards, 0 <= I < N, e.g. 0/2), "
                             "not 'x'")):
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--shard", value])
        assert exit_.value.code == 2 and why in capsys.readouterr().err
