"""``sentinel edge status``: what a running (or stopped) edge daemon left in its buffer."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from edge.buffer import Buffer
from protocols.config import FirmwareConfig


PAYLOAD_SHOWN = 160  # characters of a dead letter's payload in the text listing (JSON has it whole)


def read_status(config: FirmwareConfig, buffer_path: str | Path | None = None, dead_letters: int = 0) -> dict:
    """The buffer's depth and counters and the daemon's last snapshot; with ``dead_letters``, the
    newest that many rejected messages with their reasons (``dead_letter_list``)."""
    path = Path(buffer_path or config.buffer_path())
    if not path.exists():
        raise FileNotFoundError(f"no buffer at {path}: has `sentinel edge run --config ...` run here?")
    buf = Buffer(path, config.identity.substation)
    try:
        stats = buf.stats()
        raw = buf.status()
        letters = buf.dead_letters(dead_letters) if dead_letters > 0 else []
    finally:
        buf.close()
    snap = json.loads(raw) if raw else {}
    now = datetime.now(UTC)
    return {
        "edge_id": config.identity.edge_id,
        "buffer": str(path),
        "readings_pending": stats.readings_pending,
        "events_pending": stats.events_pending,
        "oldest_pending_age_s": (now - stats.oldest_pending).total_seconds() if stats.oldest_pending else None,
        "last_sync": stats.last_sync.isoformat() if stats.last_sync else None,
        "dropped": stats.dropped,
        "dropped_by": stats.dropped_by or {},
        "dropped_kept": stats.dropped_kept,
        "buffer_used_bytes": stats.used_bytes,
        "buffer_limits": {"max_rows": config.buffer.max_rows, "max_bytes": config.buffer.max_bytes,
                          "max_age_s": config.buffer.max_age_s, "policy": config.buffer.policy},
        "dropped_unwritable": stats.dropped_unwritable,
        # after an outage the newest readings go first (edge.sync, "Live first"): from seq L on
        "live_lane": {"from_seq": stats.live_lo, "hub_holds_through": stats.live_hi} if stats.live_lo else None,
        "buffer_error": (snap.get("buffer") or {}).get("error", "") if snap else "",
        "dead_letters": stats.dead_letters,
        "daemon_seen_s_ago": time.time() - snap["updated_at"] if snap else None,
        "hub": snap.get("hub"),
        "devices": snap.get("devices", []),
        "scoring": snap.get("scoring"),
        "ot_logs_pending": stats.ot_logs_pending,
        "ot_logs_oldest_age_s": ((now - stats.ot_logs_oldest_pending).total_seconds()
                                 if stats.ot_logs_oldest_pending else None),
        "ot_logs_dropped": stats.ot_logs_dropped,
        "ot_logs": snap.get("ot_logs"),
        "ot_logs_configured": config.ot_logs is not None,
        **({"dead_letter_list": [{"received": datetime.fromtimestamp(ts, UTC).isoformat(), "source": source,
                                  "topic": topic, "reason": reason, "payload": payload}
                                 for ts, source, topic, payload, reason in letters]} if dead_letters > 0 else {}),
    }


def format_status(st: dict) -> str:
    def age(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds:.0f} s"

    seen = st["daemon_seen_s_ago"]
    lines = [
        f"edge {st['edge_id']}  buffer {st['buffer']}",
        "daemon: " + ("never ran" if seen is None else ("running" if seen < 10 else f"not running (last seen {age(seen)} ago)")),
        f"buffer: {st['readings_pending']:,} readings and {st['events_pending']:,} events waiting; "
        f"oldest unsent {age(st['oldest_pending_age_s'])} old; dropped {st['dropped']:,}; "
        f"malformed messages {st['dead_letters']:,}",
        *([f"buffer NOT WRITABLE: {st['buffer_error']} (readings held in memory)"] if st.get("buffer_error") else []),
        *([f"dropped while the buffer was unwritable: {st['dropped_unwritable']:,} readings"]
          if st.get("dropped_unwritable") else []),
        *([_limits_line(st)] if st.get("buffer_limits") else []),
        *([_live_line(st["live_lane"])] if st.get("live_lane") else []),
        f"last sync: {st['last_sync'] or 'never'}",
    ]
    hub = st.get("hub")
    if hub:
        state = {True: "reachable", False: "UNREACHABLE", None: "not tried yet"}[hub["up"]]
        lines.append(f"hub {hub['url']}: {state}" + (f" ({hub['last_error']})" if hub["up"] is False else ""))
    scoring = st.get("scoring")
    if scoring:
        lines.append(scoring_line(scoring))
    if st.get("ot_logs_configured") or st.get("ot_logs_pending"):
        lines.extend(ot_log_lines(st))
    if st["devices"]:
        lines.append("DEVICE            STATE    POLLS  FAILURES  LAST ERROR")
        for d in st["devices"]:
            state = {True: "up", False: "DOWN", None: "-"}[d["online"]]
            clock = (f"  clock stepped back {d['clock_steps']}x: {d['clock_retimed']} readings at the edge's time"
                     if d.get("clock_retimed") else "")
            lines.append(f"{d['device_id']:<17} {state:<8} {d['polls']:>5}  {d['failures']:>8}  {d['last_error']}{clock}")
    if "dead_letter_list" in st:
        lines.extend(dead_letter_lines(st["dead_letter_list"], st["dead_letters"]))
    return "\n".join(lines)


def dead_letter_lines(letters: list[dict], total: int) -> list[str]:
    """The newest rejected messages, each with when, from where, why, and the start of its payload."""
    if not letters:
        return ["dead letters: none kept"]
    lines = [f"dead letters: the newest {len(letters):,} of {total:,} received (newest first)"]
    for d in letters:
        payload = d["payload"].replace("\n", " ")
        if len(payload) > PAYLOAD_SHOWN:
            payload = payload[:PAYLOAD_SHOWN] + f"... ({len(d['payload']):,} characters)"
        lines += [f"  {d['received']}  {d['source']}  topic {d['topic']}",
                  f"    why: {d['reason']}",
                  f"    payload: {payload}"]
    return lines


def scoring_line(scoring: dict) -> str:
    """``model: feeder v3`` (or ``model refused: <reason>``), then what was scored."""
    if scoring.get("refused"):
        model = f"model refused: {scoring['refused']}"
        if scoring.get("model"):
            model += f" (still scoring with {scoring['model']})"
    else:
        model = f"model: {scoring['model']}" if scoring.get("model") else "model: none (detectors only)"
    return (f"{model}; {scoring.get('readings_scored', 0):,} readings scored, "
            f"{scoring.get('anomaly_events', 0):,} anomaly events, {scoring.get('active_anomalies', 0)} active")


def ot_log_lines(st: dict) -> list[str]:
    """The OT log backlog (entries waiting for the hub), then one line per collector."""
    ot = st.get("ot_logs") or {}
    age = st.get("ot_logs_oldest_age_s")
    head = (f"ot logs: {st['ot_logs_pending']:,} entries waiting"
            + (f", oldest {age:.0f} s" if age is not None else "")
            + f"; {ot.get('sent', 0):,} sent this run")
    if st.get("ot_logs_dropped"):
        head += f"; dropped {st['ot_logs_dropped']:,}"
    if ot.get("hub_refuses"):
        head += f"; {ot['hub_refuses']}"
    lines = [head]
    for src in ot.get("sources", []):
        state = {True: "up", False: "DOWN", None: "-"}[src["up"]]
        line = f"  {src['kind']} {src['where']}: {state}, {src['entries']:,} entries, {src['rejected']:,} rejected"
        if src.get("line") is not None:
            line += f", read to line {src['line']:,} (byte {src['offset']:,})"
        if src.get("last_error"):
            line += f"; last problem: {src['last_error']}"
        lines.append(line)
    return lines


def _live_line(lane: dict) -> str:
    """``live lane: the newest readings go first, from #250,001 (the hub holds them through #252,500);
    the backlog below goes oldest first``."""
    through = lane["hub_holds_through"]
    held = (f"the hub holds them through #{through:,}" if through > 0
            else "the hub holds none yet" if through == 0 else "the hub holds some, not yet confirmed")
    return (f"live lane: the newest readings go first, from #{lane['from_seq']:,} ({held}); the backlog below "
            "goes oldest first")


def _limits_line(st: dict) -> str:
    """``limits: 2.0 GB (12 % used), 10,000,000 rows, 30 days; policy drop_oldest; dropped: 1,200 by
    size (40 around anomalies)``."""
    lim = st["buffer_limits"]
    size = "no size limit" if not lim["max_bytes"] else \
        f"{lim['max_bytes'] / 1e9:.1f} GB ({100 * st.get('buffer_used_bytes', 0) / lim['max_bytes']:.0f} % used)"
    age = "no age limit" if not lim["max_age_s"] else f"{lim['max_age_s'] / 86400:g} days"
    words = {"rows": "by rows", "bytes": "by size", "age": "by age", "new": "new, not stored"}
    by = [f"{n:,} {words[why]}" for why, n in (st.get("dropped_by") or {}).items() if n]
    line = f"limits: {size}, {lim['max_rows']:,} rows, {age}; policy {lim['policy']}"
    if by:
        line += "; dropped " + ", ".join(by)
        if st.get("dropped_kept"):
            line += f" ({st['dropped_kept']:,} of them around anomalies)"
    return line
