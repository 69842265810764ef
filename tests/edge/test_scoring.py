"""Edge scoring: every buffered reading carries a score; anomalies raise events once per episode."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from edge.buffer import Buffer
from edge.daemon import EdgeDaemon
from edge.scoring import AnomalyMonitor, EdgeScoring
from protocols.config import ConfigError, ScoringSettings, load_config, parse_config
from protocols.wire import Event
from simulator import Simulation, parse_scenario
from tests.conftest import CONFIGS, REPO, free_port

pytestmark = pytest.mark.timeout(120)


def fast_config(poll_s: float = 0.05, **scoring: object):
    """nairobi-s1 on free ports, polled every ``poll_s``, the hub unreachable (readings stay buffered)."""
    base = load_config(CONFIGS / "nairobi-s1.toml")
    port = free_port()
    devices = [msgspec.structs.replace(d, port=port, poll_interval_s=poll_s, timeout_s=poll_s * 0.8) for d in base.devices]
    hub = msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{free_port()}", backoff_initial_s=5.0,
                                  backoff_max_s=5.0)
    return msgspec.structs.replace(base, devices=devices, hub=hub,
                                   scoring=msgspec.structs.replace(ScoringSettings(), **scoring))


def step_scenario(start_s: float, magnitude_kv: float = 0.35):
    return parse_scenario(json.dumps({
        "scenario_name": "feeder step", "duration_seconds": 10_000,
        "anomalies": [{"type": "step", "sensor_type": "voltage", "device_id": "FEEDER-F12", "metric": "voltage_l1",
                       "magnitude": magnitude_kv, "start_time": start_s, "duration_seconds": 5_000}],
    }))


async def run_daemon(cfg, sim: Simulation, wall_s: float, buffer: Path, during=None) -> EdgeDaemon:
    daemon = EdgeDaemon(cfg, buffer_path=buffer)
    tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
    if during is not None:
        await during(daemon)
    await asyncio.sleep(wall_s)
    for t in reversed(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return daemon


def buffered_events(path: Path) -> list[Event]:
    db = sqlite3.connect(path)
    dec = msgspec.msgpack.Decoder(Event)
    return [dec.decode(b) for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]


def test_a_step_on_a_feeder_voltage_is_scored_and_raises_one_anomaly_event(tmp_path: Path) -> None:
    cfg = fast_config()
    buffer = tmp_path / "edge.db"

    async def main() -> EdgeDaemon:
        # one poll = 0.05 s wall = 1 s scenario time; the step comes after the detectors' warm-up
        async with Simulation([cfg], step_scenario(start_s=150), speed=20.0, tick_s=0.05, seed=3) as sim:
            return await run_daemon(cfg, sim, 12.0, buffer)

    daemon = asyncio.run(main())
    db = sqlite3.connect(buffer)
    n, scored = db.execute("SELECT count(*), count(anomaly_score) FROM readings").fetchone()
    assert n > 1000 and scored == n  # every reading carries a score
    assert db.execute("SELECT min(anomaly_score) >= 0 AND max(anomaly_score) <= 1 FROM readings").fetchone() == (1,)
    events = [e for e in buffered_events(buffer) if e.type.startswith("anomaly_")]
    raised = [e for e in events if e.state == "raised"]
    assert raised, "no anomaly event"
    feeder = [e for e in raised if e.device_id == "FEEDER-F12" and e.metric == "voltage_l1"]
    assert feeder, [(e.device_id, e.metric, e.type) for e in raised]
    # a step's first sample looks like a spike: the event carries the type at the moment it is raised
    assert feeder[0].type in ("anomaly_step", "anomaly_spike"), feeder[0]
    assert feeder[0].severity in ("WARNING", "CRITICAL")
    # once per episode: at most one raise plus one escalation for the feeder's voltage_l1
    assert len(feeder) <= 2 and [e.severity for e in feeder] in (["WARNING"], ["CRITICAL"], ["WARNING", "CRITICAL"])
    # the step is scored at its readings: the max score of voltage_l1 after the step is high
    top, kind = db.execute("SELECT anomaly_score, anomaly_type FROM readings WHERE device_id = 'FEEDER-F12' AND"
                           " metric = 'voltage_l1' ORDER BY anomaly_score DESC LIMIT 1").fetchone()
    assert top >= 0.8 and kind == "step"
    status = daemon.status_snapshot()["scoring"]
    assert status["model"] is None and status["readings_scored"] == n
    assert status["anomaly_events"] == len(events)


def test_anomaly_monitor_raises_once_escalates_and_clears_with_hysteresis() -> None:
    mon = AnomalyMonitor("S1", ScoringSettings(threshold=0.8, critical_threshold=0.95, clear_below=0.6,
                                               clear_after=2))
    scores = np.array([0.1, 0.85, 0.9, 0.5, 0.97, 0.99, 0.5, 0.7, 0.5, 0.4, 0.85])
    types = ["none", "spike", "step", "step", "step", "step", "none", "none", "none", "none", "drift"]
    rows = [(float(t), "D", "m", 1.0, "kV", 1.0, 0) for t in range(len(scores))]
    events = mon.check(rows[:5], scores[:5], types[:5]) + mon.check(rows[5:], scores[5:], types[5:])
    assert [(e.ts.timestamp(), e.state, e.severity, e.type) for e in events] == [
        (1.0, "raised", "WARNING", "anomaly_spike"),
        (4.0, "raised", "CRITICAL", "anomaly_spike"),  # escalation of the same episode (one low score: not cleared)
        (9.0, "cleared", "INFO", "anomaly_spike"),  # two in a row below clear_below (0.7 at t=7 restarted the count)
        (10.0, "raised", "WARNING", "anomaly_drift"),  # a new episode
    ]
    assert [e.severity for e in mon.check(rows[:1], np.array([0.99]), ["step"])] == ["CRITICAL"]  # escalates once
    assert mon.check(rows[:1], np.array([0.99]), ["step"]) == []


def test_scores_of_a_drained_batch_come_from_one_scorer_pass(tmp_path: Path) -> None:
    scoring = EdgeScoring("S1", ScoringSettings())
    rows = [(float(t), dev, "v", 10.0 + 0.01 * (t % 3), "kV", 1.0, 0) for t in range(50) for dev in ("A", "B")]
    calls = []
    block = scoring.scorer.score_block
    scoring.scorer.score_block = lambda *a, **k: calls.append(1) or block(*a, **k)  # type: ignore[method-assign]
    (scores, types), events = scoring.score(rows)
    assert len(calls) == 1 and len(scores) == len(types) == 100 and events == []
    buf = Buffer(tmp_path / "b.db", "S1")
    buf.append(rows, [], (scores, types))
    run, _ = buf.pending(1000)
    assert run is not None and [r.anomaly_score for r in run.items] == scores
    assert {r.anomaly_type for r in run.items} <= {"none", "step", "drift", "spike", "oscillation", "dropout", "frozen"}


def test_an_old_buffer_gains_the_score_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, device_id TEXT NOT NULL,"
               " metric TEXT NOT NULL, value REAL, unit TEXT NOT NULL, quality REAL NOT NULL, flags INTEGER NOT NULL)")
    db.execute("INSERT INTO readings (ts, device_id, metric, value, unit, quality, flags) VALUES (1, 'D', 'm', 2, '', 1, 0)")
    db.commit()
    db.close()
    buf = Buffer(path, "S1")
    run, _ = buf.pending(10)
    assert run is not None and run.items[0].value == 2 and run.items[0].anomaly_score is None
    buf.append([(2.0, "D", "m", 3.0, "", 1.0, 0)], [], ([0.25], ["none"]))
    run, _ = buf.pending(10)
    assert [r.anomaly_score for r in run.items] == [None, 0.25]


def test_scoring_config_defaults_and_checks() -> None:
    text = (CONFIGS / "nairobi-s1.toml").read_text()
    assert parse_config(text).scoring == ScoringSettings()
    cfg = parse_config(text + '\n[scoring]\nthreshold = 0.7\nmodel = "feeder"\n')
    assert cfg.scoring.threshold == 0.7 and cfg.scoring.model == "feeder"
    with pytest.raises(ConfigError, match="critical_threshold must be at least threshold"):
        parse_config(text + "\n[scoring]\nthreshold = 0.9\ncritical_threshold = 0.85\n")
    with pytest.raises(ConfigError, match="scoring.treshold: unknown key"):
        parse_config(text + "\n[scoring]\ntreshold = 0.9\n")


def test_the_edge_daemon_imports_no_scikit_learn() -> None:
    code = ("import sys, edge.daemon, edge.status, edge.scoring, models.runtime, models.registry\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'skl2onnx', 'hub', 'agents')"
            " or m in ('models.train', 'models.export'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
