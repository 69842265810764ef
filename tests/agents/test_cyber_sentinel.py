from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cyber_sentinel import (
    CyberConfig,
    SetpointLimit,
    SitePolicy,
    alert_text,
    analyse,
    chain,
    verify,
    worst_severity,
)
from agents.cyber_sentinel.evidence import GENESIS
from protocols.otlog import OtLogEvent

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
ATTACKER = "192.168.1.57"


def login(minutes: float, result: str = "failure", source: str | None = ATTACKER, device: str = "RTU-MOM01",
          user: str = "admin", substation: str = "MOMBASA") -> OtLogEvent:
    return OtLogEvent(ts=T0 + timedelta(minutes=minutes), kind="auth", substation=substation, device_id=device,
                      result=result, source=source, user=user, action="login", method="password")


def command(seconds: float, point: str, cmd: str = "breaker_open", master: str = "SCADA-1", source: str = "10.1.0.5",
            substation: str = "MOMBASA", device: str = "RTU-MOM01", value: float | None = None,
            result: str = "success", at: datetime = T0) -> OtLogEvent:
    return OtLogEvent(ts=at + timedelta(seconds=seconds), kind="command", substation=substation, device_id=device,
                      result=result, source=source, command=cmd, point=point, value=value, master=master,
                      protocol="dnp3", user="operator1")


POLICY = SitePolicy(timezone="Africa/Nairobi", hours="07:00-19:00", days=("mon", "tue", "wed", "thu", "fri"),
                    networks=("10.1.0.0/16",), masters=("SCADA-1", "SCADA-2"))
CONFIG = CyberConfig(sites={"MOMBASA": POLICY},
                     setpoints=(SetpointLimit(point="AVR.Vref", min=125.0, max=140.0, unit="kV"),))


def of_type(findings: list, type: str) -> list:
    return [f for f in findings if f.type == type]


# -- brute force ---------------------------------------------------------------------------------

def test_three_failures_are_nothing() -> None:
    assert analyse([login(0), login(3), login(6)]) == []


def test_four_failures_in_ten_minutes_are_the_seeds_alert() -> None:
    events = [login(9), login(0), login(6), login(3)]  # any order
    [f] = analyse(events)
    assert (f.agent, f.type, f.severity, f.device_id, f.substation) == (
        "cyber_sentinel", "brute_force", "WARNING", "RTU-MOM01", "MOMBASA")
    assert alert_text(f) == (
        "SECURITY ALERT: Failed login attempt on RTU-MOM01 from IP 192.168.1.57 (4 failures in 10 minutes). "
        "Potential brute force attack. RECOMMEND: Block IP address, reset RTU password, review access logs.")
    assert f.key == "cyber:brute_force:192.168.1.57:RTU-MOM01"
    assert (f.start, f.timestamp) == (T0, T0 + timedelta(minutes=9))
    assert (f.value, f.threshold) == (4.0, 4.0)
    assert [(e["ts"], e["kind"], e["source"], e["user"], e["device_id"], e["result"]) for e in f.facts["evidence"]] == [
        (f"2026-03-02T10:0{m}:00Z", "auth", ATTACKER, "admin", "RTU-MOM01", "failure") for m in (0, 3, 6, 9)]
    assert f.facts["actions"] == ["block_source", "reset_credentials", "review_access_logs"]
    assert (f.facts["failures"], f.facts["evidence_count"], f.facts["evidence_omitted"]) == (4, 4, 0)
    assert f.facts["active"] is True
    assert verify(f.facts)


def test_four_failures_exactly_ten_minutes_apart_count_but_eleven_do_not() -> None:
    assert [f.severity for f in analyse([login(0), login(3), login(6), login(10)])] == ["WARNING"]
    assert analyse([login(0), login(4), login(8), login(11)]) == []


def test_failures_are_counted_per_source_and_target() -> None:
    events = [login(0), login(1, source="192.168.1.58"), login(2, device="RTU-MOM02"), login(3),
              login(4, source=None), login(5)]
    assert analyse(events) == []


def test_failures_then_success_is_critical() -> None:
    events = [login(0), login(3), login(6), login(9), login(12, result="success")]
    [f] = analyse(events)
    assert (f.type, f.severity) == ("brute_force", "CRITICAL")
    assert [e["result"] for e in f.facts["evidence"]] == ["failure"] * 4 + ["success"]
    assert f.timestamp == T0 + timedelta(minutes=12)
    assert f.facts["compromised_user"] == "admin"
    assert f.recommendation == ("Isolate RTU-MOM01, block IP address, reset RTU password and the credentials of "
                                "user admin, escalate to the SOC, review access logs.")
    assert "possible compromise" in f.description
    # a success before the fourth failure, or long after, is no compromise
    assert analyse([login(0), login(1), login(2, result="success"), login(3), login(4)])[0].severity == "WARNING"
    assert analyse([login(0), login(1), login(2), login(3), login(14, result="success")])[0].severity == "WARNING"


def test_a_long_attack_is_one_finding_with_head_and_tail_of_its_evidence() -> None:
    events = [login(i * 0.5) for i in range(120)]
    [f] = analyse(events, CyberConfig(evidence_limit=10))
    assert (f.facts["failures"], f.facts["evidence_count"], f.facts["evidence_omitted"]) == (120, 120, 110)
    assert f.value == 21.0  # 0, 0.5, ... 10 minutes: 21 failures in the window
    assert [e["ts"][11:19] for e in f.facts["evidence"]] == [
        "10:00:00", "10:00:30", "10:01:00", "10:01:30", "10:02:00",
        "10:57:30", "10:58:00", "10:58:30", "10:59:00", "10:59:30"]


# -- command sequences and policy ----------------------------------------------------------------

def test_three_breakers_opened_within_a_minute_is_critical() -> None:
    events = [command(0, "CB-1"), command(25, "CB-2"), command(50, "CB-3", master="SCADA-2", source="10.1.0.6")]
    findings = analyse(events, CyberConfig())
    [f] = findings
    assert (f.type, f.severity, f.key, f.value, f.threshold) == (
        "breaker_sequence", "CRITICAL", "cyber:breaker_sequence:MOMBASA", 3.0, 3.0)
    assert f.facts["breakers"] == ["RTU-MOM01/CB-1", "RTU-MOM01/CB-2", "RTU-MOM01/CB-3"]
    assert f.facts["masters"] == ["SCADA-1", "SCADA-2"]
    assert [e["point"] for e in f.facts["evidence"]] == ["CB-1", "CB-2", "CB-3"]
    assert (f.start, f.timestamp) == (T0, T0 + timedelta(seconds=50))


def test_breakers_must_be_distinct_and_within_the_window() -> None:
    assert analyse([command(0, "CB-1"), command(10, "CB-1"), command(20, "CB-2"), command(30, "CB-1")]) == []
    assert analyse([command(0, "CB-1"), command(30, "CB-2"), command(61, "CB-3")]) == []
    other = [command(0, "CB-1"), command(10, "CB-2"), command(20, "CB-3", substation="NAIROBI")]
    assert analyse(other) == []
    # the same point name on two devices is two breakers
    [f] = analyse([command(0, "CB-1"), command(10, "CB-1", device="RTU-MOM02"), command(20, "CB-2")])
    assert f.facts["breakers"] == ["RTU-MOM01/CB-1", "RTU-MOM01/CB-2", "RTU-MOM02/CB-1"]


def test_a_breaker_sequence_from_an_unknown_master_is_an_emergency() -> None:
    at = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # 09:00 in Nairobi: within operating hours
    events = [command(0, "CB-1", at=at), command(20, "CB-2", at=at),
              command(40, "CB-3", master="ROGUE-7", at=at)]
    findings = analyse(events, CONFIG)
    assert [(f.type, f.severity) for f in findings] == [("breaker_sequence", "EMERGENCY"),
                                                        ("unknown_master", "CRITICAL")]
    assert worst_severity(findings) == "EMERGENCY"
    emergency = findings[0]
    assert emergency.facts["unknown_masters"] == ["ROGUE-7"]
    assert "isolate_device" in emergency.facts["actions"] and "escalate_soc" in emergency.facts["actions"]
    # from an allowed master on a disallowed network: also an emergency
    events = [command(0, "CB-1", at=at), command(20, "CB-2", at=at),
              command(40, "CB-3", source="203.0.113.9", at=at)]
    assert [(f.type, f.severity) for f in analyse(events, CONFIG)] == [("breaker_sequence", "EMERGENCY"),
                                                                       ("disallowed_network", "CRITICAL")]


def test_a_command_outside_operating_hours_in_local_time() -> None:
    # 17:30 UTC is 20:30 in Nairobi (UTC+3): after hours; 05:00 UTC is 08:00: within
    late = command(0, "CB-7", cmd="breaker_close", at=datetime(2026, 3, 2, 17, 30, tzinfo=UTC))
    morning = command(0, "CB-7", cmd="breaker_close", at=datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    sunday = command(0, "CB-7", cmd="breaker_close", at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    assert analyse([morning], CONFIG) == []
    [f] = analyse([late, morning], CONFIG)
    assert (f.type, f.severity, f.key, f.value) == (
        "off_hours_command", "WARNING", "cyber:off_hours_command:MOMBASA:SCADA-1", 1.0)
    assert f.description == ("1 control command to RTU-MOM01 from SCADA-1 outside operating hours (07:00-19:00 "
                             "Africa/Nairobi, Mon, Tue, Wed, Thu, Fri), first at Mon 20:30 local time.")
    [f] = analyse([sunday], CONFIG)
    assert f.timestamp == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_operating_hours_follow_daylight_saving_time() -> None:
    berlin = CyberConfig(sites={"MOMBASA": SitePolicy(timezone="Europe/Berlin", hours="07:00-19:00")})
    before = command(0, "T1", cmd="tap_raise", at=datetime(2026, 3, 27, 5, 30, tzinfo=UTC))  # 06:30 CET
    after = command(0, "T1", cmd="tap_raise", at=datetime(2026, 3, 30, 5, 30, tzinfo=UTC))  # 07:30 CEST
    [f] = analyse([before, after], berlin)
    assert f.timestamp == before.ts
    overnight = CyberConfig(sites={"MOMBASA": SitePolicy(hours="22:00-06:00")})
    times = [datetime(2026, 3, 2, h, 0, tzinfo=UTC) for h in (21, 22, 5, 6)]
    [f] = analyse([command(0, "T1", cmd="tap_raise", at=t) for t in times], overnight)
    assert [e["ts"] for e in f.facts["evidence"]] == ["2026-03-02T06:00:00Z", "2026-03-02T21:00:00Z"]


def test_a_command_from_a_network_not_allowed() -> None:
    at = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    ok = [command(0, "CB-1", cmd="breaker_close", source="10.1.200.3", at=at),
          command(1, "CB-1", cmd="breaker_close", source="::ffff:10.1.0.9", at=at)]
    assert analyse(ok, CONFIG) == []
    [f] = analyse([*ok, command(2, "CB-1", cmd="breaker_close", source="203.0.113.9", at=at)], CONFIG)
    assert (f.type, f.severity, f.key) == ("disallowed_network", "CRITICAL", "cyber:disallowed_network:MOMBASA:203.0.113.9")
    assert f.recommendation == ("Block source address 203.0.113.9, isolate RTU-MOM01 from it, escalate to the SOC, "
                                "review access logs.")
    assert [e["source"] for e in f.facts["evidence"]] == ["203.0.113.9"]


def test_a_command_from_an_unknown_master() -> None:
    at = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    events = [command(0, "CB-1", cmd="reset", master="SCADA-2", at=at), command(5, "CB-1", cmd="reset", master="EWS-9", at=at),
              command(9, "CB-2", cmd="reset", master="EWS-9", at=at)]
    [f] = analyse(events, CONFIG)
    assert (f.type, f.severity, f.key, f.value) == ("unknown_master", "CRITICAL", "cyber:unknown_master:MOMBASA:EWS-9", 2.0)
    assert f.description == ("2 control commands to RTU-MOM01 in MOMBASA from master EWS-9, which is not in the "
                             "allow-list (SCADA-1, SCADA-2).")
    assert f.facts["evidence_count"] == 2


def test_an_out_of_spec_setpoint() -> None:
    at = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    inside = command(0, "AVR.Vref", cmd="setpoint_write", value=132.0, at=at)
    refused = command(10, "AVR.Vref", cmd="setpoint_write", value=150.0, result="failure", at=at)
    accepted = command(20, "AVR.Vref", cmd="setpoint_write", value=118.0, at=at)
    assert analyse([inside], CONFIG) == []
    [f] = analyse([inside, refused], CONFIG)
    assert (f.type, f.severity, f.value, f.threshold) == ("setpoint_out_of_spec", "WARNING", 150.0, 140.0)
    [f] = analyse([inside, refused, accepted], CONFIG)
    assert (f.severity, f.value, f.threshold, f.facts["values"]) == ("CRITICAL", 150.0, 140.0, [150.0, 118.0])
    assert f.key == "cyber:setpoint_out_of_spec:MOMBASA:RTU-MOM01:AVR.Vref"
    assert f.description == ("Setpoint 150 kV written to RTU-MOM01 AVR.Vref, outside its allowed range 125..140 kV "
                             "(2 out-of-spec writes; accepted by the device).")


def test_a_burst_of_commands_far_above_the_masters_usual_rate() -> None:
    at = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    usual = [command(600 * i, "T1", cmd="tap_raise", at=at) for i in range(12)]  # 6 an hour, for 2 hours
    burst = [command(7200 + 2 * i, "T1", cmd="tap_lower", at=at) for i in range(25)]  # 25 in 50 s
    [f] = analyse(usual + burst, CONFIG)
    assert (f.type, f.severity, f.key, f.value, f.threshold) == (
        "command_rate", "WARNING", "cyber:command_rate:SCADA-1", 25.0, 20.0)
    assert f.facts["usual_per_h"] == pytest.approx(37 * 3600 / 7248)  # 37 commands over 2 h 48 s
    assert f.facts["evidence_count"] == 25
    busy = CyberConfig(sites={"MOMBASA": POLICY}, usual_rates_per_h={"SCADA-1": 3600.0})
    assert analyse(usual + burst, busy) == []


def test_config_changes_without_a_ticket() -> None:
    base = {"kind": "config_change", "substation": "MOMBASA", "device_id": "IED-F12", "user": "engineer",
            "parameter": "protection.overcurrent.pickup_a", "old_value": "400", "new_value": "800"}
    ticketed = OtLogEvent(ts=T0, result="success", detail="per CHG-1234", **base)
    failed = OtLogEvent(ts=T0 + timedelta(minutes=1), result="failure", detail="no reason given", **base)
    applied = OtLogEvent(ts=T0 + timedelta(minutes=2), result="success", **base)
    assert analyse([ticketed]) == []
    [f] = analyse([ticketed, failed])
    assert (f.type, f.severity, f.key) == ("config_without_ticket", "INFO", "cyber:config_without_ticket:MOMBASA:IED-F12")
    [f] = analyse([ticketed, failed, applied])
    assert (f.severity, f.value) == ("WARNING", 2.0)


# -- evidence -----------------------------------------------------------------------------------

def test_the_evidence_hash_chain_changes_when_one_entry_is_altered() -> None:
    [f] = analyse([login(0), login(3), login(6), login(9)])
    evidence = f.facts["evidence"]
    links = chain(evidence)
    assert links == f.facts["evidence_chain"] and links[-1] == f.facts["evidence_sha256"]
    assert len({*links, GENESIS}) == 5 and all(len(x) == 64 for x in links)
    altered = [dict(e) for e in evidence]
    altered[1]["source"] = "192.168.1.99"
    changed = chain(altered)
    assert changed[0] == links[0] and changed[1:] != links[1:] and all(a != b for a, b in zip(changed[1:], links[1:]))
    assert not verify({**f.facts, "evidence": altered})
    assert not verify({**f.facts, "evidence": evidence[::-1]})
    assert not verify({**f.facts, "evidence": evidence[:-1]})
    assert verify(msgspec.json.decode(msgspec.json.encode(f.facts)))  # survives the trip to the API


# -- config and arguments -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "message"),
    [({"sites": {"X": {"networks": ["10.0.0.1/8"]}}}, "networks[0]: not a network: '10.0.0.1/8'"),
     ({"sites": {"X": {"timezone": "Mars/Olympus"}}}, "timezone: unknown time zone 'Mars/Olympus'"),
     ({"sites": {"X": {"hours": "7-19"}}}, "hours: expected 'HH:MM-HH:MM'"),
     ({"brute_force_failures": 1}, "Expected `int` >= 2 - at `$.brute_force_failures`"),
     ({"setpoints": [{"point": "p", "min": 2, "max": 1}]}, "min: 2.0 is above max 1.0 - at `$.setpoints[0]`"),
     ({"ticket_pattern": "("}, "ticket_pattern: not a regular expression"),
     ({"colour": "red"}, "unknown field `colour`")],
)
def test_bad_config_is_an_error_naming_the_key(raw: dict, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message.replace("[", r"\[").replace("$", r"\$").replace(".", r"\.")):
        msgspec.convert(raw, CyberConfig)


def test_now_marks_what_is_still_active_and_must_carry_a_time_zone() -> None:
    events = [login(0), login(3), login(6), login(9)]
    assert analyse(events, now=T0 + timedelta(minutes=19))[0].facts["active"] is True
    assert analyse(events, now=T0 + timedelta(minutes=20))[0].facts["active"] is False
    with pytest.raises(ValueError, match="time-zone aware"):
        analyse(events, now=datetime(2026, 3, 2, 12, 0))
    assert analyse([]) == []


# -- the vectorised path against a simple reference ---------------------------------------------

def reference(events: list[OtLogEvent], config: CyberConfig) -> dict[str, tuple[str, list[int]]]:
    """Brute force and breaker sequences the obvious way: every window, every pair. Returns
    key -> (severity, positions of the evidence in the time-sorted events)."""
    ev = sorted(events, key=lambda e: e.ts)
    out: dict[str, tuple[str, list[int]]] = {}
    w = timedelta(seconds=config.brute_force_window_s)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(ev):
        if e.kind == "auth" and e.action == "login":
            groups.setdefault((e.source or "", e.device_id), []).append(i)
    for (source, device), idx in groups.items():
        fails = [i for i in idx if ev[i].result == "failure"]
        flagged: set[int] = set()
        first_hit = None
        for i in fails:
            window = [j for j in fails if ev[i].ts - w <= ev[j].ts <= ev[i].ts]
            if len(window) >= config.brute_force_failures:
                flagged |= set(window)
                first_hit = ev[i].ts if first_hit is None else min(first_hit, ev[i].ts)
        if not flagged:
            continue
        severity, evidence = "WARNING", sorted(flagged)
        for s in (i for i in idx if ev[i].result == "success"):
            if ev[s].ts >= first_hit and any(ev[f].ts <= ev[s].ts <= ev[f].ts + w for f in flagged):
                severity, evidence = "CRITICAL", sorted([*flagged, s])
                break
        out[f"cyber:brute_force:{source or 'local'}:{device}"] = (severity, evidence)
    bw = timedelta(seconds=config.breaker_window_s)
    opens: dict[str, list[int]] = {}
    for i, e in enumerate(ev):
        if e.command == "breaker_open":
            opens.setdefault(e.substation, []).append(i)
    for substation, idx in opens.items():
        flagged = set()
        for i in idx:
            window = [j for j in idx if ev[i].ts - bw <= ev[j].ts <= ev[i].ts]
            if len({(ev[j].device_id, ev[j].point) for j in window}) >= config.breaker_opens:
                flagged |= set(window)
        if flagged:
            out[f"cyber:breaker_sequence:{substation}"] = ("CRITICAL", sorted(flagged))
    return out


def vectorised(events: list[OtLogEvent], config: CyberConfig) -> dict[str, tuple[str, list[int]]]:
    ev = sorted(events, key=lambda e: e.ts)
    position = {id(e): i for i, e in enumerate(ev)}
    by_entry: dict[bytes, list[int]] = {}
    for e in ev:
        by_entry.setdefault(msgspec.json.encode(e), []).append(position[id(e)])
    out = {}
    for f in analyse(events, config):
        if f.type in {"brute_force", "breaker_sequence"}:
            assert f.facts["evidence_omitted"] == 0
            # identical entries (same time, same fields) are interchangeable: take them in order
            taken: dict[bytes, int] = {}
            idx = []
            for entry in f.facts["evidence"]:
                raw = msgspec.json.encode(msgspec.convert(entry, OtLogEvent))
                k = taken.get(raw, 0)
                idx.append(by_entry[raw][k])
                taken[raw] = k + 1
            out[f.key] = (f.severity, sorted(idx))
    return out


def random_event(rng: random.Random, span_s: int) -> OtLogEvent:
    ts = T0 + timedelta(seconds=rng.randrange(span_s))
    substation = rng.choice(["MOMBASA", "NAIROBI"])
    if rng.random() < 0.6:
        return OtLogEvent(ts=ts, kind="auth", substation=substation, device_id=rng.choice(["RTU-1", "RTU-2"]),
                          result=rng.choice(["failure", "failure", "failure", "success"]),
                          source=rng.choice(["10.0.0.1", "10.0.0.2", None]), user="admin", action="login")
    return OtLogEvent(ts=ts, kind="command", substation=substation, device_id=rng.choice(["RTU-1", "RTU-2"]),
                      result="success", command=rng.choice(["breaker_open", "breaker_open", "breaker_close"]),
                      point=rng.choice(["CB-1", "CB-2", "CB-3", "CB-4"]), master="SCADA-1")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 80), span_s=st.sampled_from([120, 900, 3600]),
       failures=st.integers(2, 5), opens=st.integers(2, 4))
def test_vectorised_detections_match_the_reference_on_small_samples(seed: int, n: int, span_s: int,
                                                                     failures: int, opens: int) -> None:
    rng = random.Random(seed)
    events = [random_event(rng, span_s) for _ in range(n)]
    config = CyberConfig(brute_force_failures=failures, breaker_opens=opens, rate_min_commands=10_000)
    assert vectorised(events, config) == reference(events, config)


def test_100000_events_give_the_planted_findings_and_agree_with_the_reference() -> None:
    rng = random.Random(20260302)
    day = 86_400
    events: list[OtLogEvent] = []
    # background: successful logins and closes from 400 operators over a day, failures rare and spread out
    for _ in range(100_000 - 5_014):  # 5,014 planted below
        ts = T0 + timedelta(seconds=rng.randrange(day))
        src = f"10.{rng.randrange(4)}.{rng.randrange(10)}.{rng.randrange(10)}"
        if rng.random() < 0.7:
            events.append(OtLogEvent(ts=ts, kind="auth", substation="MOMBASA", device_id=f"RTU-{rng.randrange(50):02d}",
                                     result="success", source=src, user="op", action="login"))
        else:
            events.append(OtLogEvent(ts=ts, kind="command", substation=f"S{rng.randrange(20)}", device_id="RTU-1",
                                     result="success", command="breaker_close", point=f"CB-{rng.randrange(9)}",
                                     master=f"M{rng.randrange(40)}"))
    # planted: 20 brute-force attacks of 6 failures each (one every 90 s), the even ones followed by a success
    for a in range(20):
        start = T0 + timedelta(hours=a)
        for k in range(6):
            events.append(msgspec.structs.replace(login(0, source=f"172.16.0.{a}", user=f"u{k}"),
                                                  ts=start + timedelta(seconds=90 * k)))
        if a % 2 == 0:
            events.append(msgspec.structs.replace(login(0, source=f"172.16.0.{a}", result="success"),
                                                  ts=start + timedelta(seconds=600)))
    # planted: 4,880 failures from one scanner on 4,880 targets (never 4 on one), and one breaker sequence
    for k in range(4_880):
        events.append(msgspec.structs.replace(login(0, source="172.31.0.1", device=f"IED-{k}"),
                                              ts=T0 + timedelta(seconds=k * 17)))
    for k, point in enumerate(["CB-1", "CB-2", "CB-1", "CB-3"]):
        events.append(command(0, point, substation="S99", at=T0 + timedelta(hours=5, seconds=15 * k)))
    rng.shuffle(events)
    assert len(events) == 100_000
    config = CyberConfig(rate_min_commands=10_000)

    began = time.perf_counter()
    findings = analyse(events, config)
    elapsed = time.perf_counter() - began
    assert elapsed < 30  # about 1 s on one core; generous for a shared machine

    brute = of_type(findings, "brute_force")
    assert len(brute) == 20
    assert sum(f.severity == "CRITICAL" for f in brute) == 10
    assert {f.facts["failures"] for f in brute} == {6}
    assert {f.value for f in brute} == {6.0}
    [seq] = of_type(findings, "breaker_sequence")
    assert (seq.substation, seq.value, seq.facts["opens"]) == ("S99", 3.0, 4)
    assert {f.type for f in findings} == {"brute_force", "breaker_sequence"}
    assert all(verify(f.facts) for f in findings)

    # the same events, a small sample: the reference agrees
    sample = [e for e in events if e.source in {"172.16.0.4", "172.16.0.5", "172.31.0.1"} or e.substation == "S99"][:3000]
    assert vectorised(sample, config) == reference(sample, config)
