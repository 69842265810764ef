"""Files from the field as they are: rows out of time order, repeated hours, clock steps, other delimiters.

``read_csv`` sorts and reports per row instead of refusing the whole file; ``strict=True`` (``--strict``)
still refuses, naming the row; truly bad input names the file, the row and the column.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from models.tabular import TableError, read_csv, regularise, score_csv
from tests.conftest import REPO

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
T0 = datetime(2026, 10, 24, tzinfo=timezone.utc)


def _hourly_newest_day_first(path: Path, days: int = 10, repeat_day: int = 3) -> dict[str, object]:
    """As PJM writes load: ``DD-MM-YYYY HH:MM``, each day's hours in order, the days newest first, and
    on ``repeat_day`` the 02:00 hour written twice (the daylight-saving repeat) with two values."""
    lines = ["Datetime,ZONE_MW"]
    expected: dict[str, float] = {}
    repeat: list[int] = []
    for day in reversed(range(days)):
        for hour in range(24):
            t = T0 + timedelta(days=day, hours=hour)
            value = 1000.0 + 100.0 * np.sin(hour / 24 * 2 * np.pi) + day
            lines.append(f"{t:%d-%m-%Y %H:%M},{value:.1f}")
            expected[t.isoformat()] = round(value, 1)
            if day == repeat_day and hour == 2:
                lines.append(f"{t:%d-%m-%Y %H:%M},{value + 10:.1f}")
                repeat.append(len(lines))  # line number of the repeat (header = 1)
                expected[t.isoformat()] = round(value, 1) + 5.0  # the mean of the two
    path.write_text("\n".join(lines) + "\n")
    return {"rows": len(lines) - 1, "repeat_line": repeat[0], "expected": expected}


def test_rows_newest_day_first_with_a_dst_repeat_are_sorted_averaged_and_reported(tmp_path: Path) -> None:
    src = tmp_path / "zone.csv"
    made = _hourly_newest_day_first(src)
    table = read_csv(src)
    assert table.rows == made["rows"]  # every row kept
    assert np.all(np.diff(table.time_s) >= 0)
    report = table.timestamps
    assert report is not None and not report.clean
    assert len(report.steps_back) == 9  # each day after the first written goes back ~47 h
    assert np.allclose(report.back_s, 47 * 3600)
    assert report.repeated.tolist() == [made["repeat_line"]]
    assert report.repeats_of.tolist() == [made["repeat_line"] - 1]
    got = {datetime.fromtimestamp(t, timezone.utc).isoformat(): v
           for t, v in zip(table.time_s, table.columns["ZONE_MW"])}
    assert got == pytest.approx(made["expected"])
    # each kept line is the one the file had at that line number
    lines = src.read_text().splitlines()
    assert all(lines[n - 1] == text for n, text in zip(table.line_numbers, table.lines))
    assert "9 steps back in time" in report.summary() and "1 rows repeat" in report.summary()
    assert f"row {made['repeat_line']}: same time as row {made['repeat_line'] - 1} (averaged)" in report.details()


def test_repeats_can_be_dropped_instead_and_regularise_shares_their_sample(tmp_path: Path) -> None:
    src = tmp_path / "zone.csv"
    made = _hourly_newest_day_first(src)
    table = read_csv(src, duplicates="first")
    assert table.rows == made["rows"] - 1
    assert np.all(np.diff(table.time_s) > 0)
    pos, samples, period = regularise(np.array([0.0, 1.0, 1.0, 2.0, 10.0]))
    assert pos.tolist() == [0, 1, 1, 2, 10] and samples == 11 and period == 1.0


def _logger_with_clock_step(path: Path, n: int = 600, step_at: int = 400, back_s: float = 3600.0) -> None:
    """1-minute logger whose clock steps back an hour at row ``step_at`` and carries on."""
    t = T0
    lines = ["timestamp,temp_c,current_a"]
    for i in range(n):
        ts = t + timedelta(minutes=i) - (timedelta(seconds=back_s) if i >= step_at else timedelta(0))
        lines.append(f"{ts:%Y-%m-%d %H:%M:%S},{20 + 0.01 * i:.2f},{5 + (i % 7) * 0.1:.1f}")
    path.write_text("\n".join(lines) + "\n")


def test_a_file_whose_later_rows_step_back_keeps_its_earlier_rows(tmp_path: Path) -> None:
    src = tmp_path / "logger.csv"
    _logger_with_clock_step(src)
    table = read_csv(src)
    report = table.timestamps
    assert report.steps_back.tolist() == [402]  # row 400 of the data is line 402
    assert report.back_s.tolist() == pytest.approx([3600.0 - 60.0])  # 59 min back from the row above
    # every row is there, the earlier ones included; the overlapping hour repeats 60 times
    assert table.rows == 600 and len(report.repeated) == 60
    before = set(range(2, 402))
    assert before <= set(table.line_numbers.tolist())
    with pytest.raises(TableError, match=r"logger.csv: row 402: timestamp '2026-10-24 05:40:00' is earlier than"):
        read_csv(src, strict=True)


def test_strict_refuses_a_repeated_time_naming_the_row(tmp_path: Path) -> None:
    src = tmp_path / "rep.csv"
    src.write_text("time,v\n2026-01-01T00:00:00,1\n2026-01-01T00:00:01,2\n2026-01-01T00:00:01,3\n")
    with pytest.raises(TableError, match=r"rep.csv: row 4: time '2026-01-01T00:00:01' repeats an earlier row"):
        read_csv(src, strict=True)
    table = read_csv(src)
    assert table.columns["v"].tolist() == [1.0, 2.5, 2.5]


@pytest.mark.parametrize(("body", "match"), [
    ("timestamp,v\n2026-01-01T00:00:00,1\nyesterday,2\n", r"bad.csv: row 3: timestamp 'yesterday' is not"),
    ("timestamp,v\n2026-01-01T00:00:00,1\n,2\n", r"bad.csv: row 3: timestamp '' is not"),
    ("Datetime,v\n31-12-2004 01:00,1\n31-13-2004 02:00,2\n", r"bad.csv: row 3: Datetime '31-13-2004 02:00'"),
    ("Datetime,v\n31-12-2004 01:00,1\n2004-12-31 02:00,2\n",
     r"bad.csv: row 3: Datetime '2004-12-31 02:00' is not a date like"),
    ("timestamp,name\n" + "".join(f"2026-01-01T00:00:{i:02d},n{i}\n" for i in range(20)),
     r"bad.csv: no numeric value column \(columns: timestamp, name\)"),
    ("timestamp,v\n2026-01-01T00:00:00,1,9\n", r"bad.csv: row 2 has 3 fields, the header has 2"),
])
def test_truly_bad_input_names_file_row_and_column(tmp_path: Path, body: str, match: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(body)
    with pytest.raises(TableError, match=match):
        read_csv(src)


def test_semicolon_file_is_read_and_scored_with_its_delimiter(tmp_path: Path) -> None:
    src = tmp_path / "pump.csv"
    rows = [f"2020-03-09 10:{i // 60:02d}:{i % 60:02d};{0.02 + 0.001 * (i % 5):.4f};{220 + i % 3}" for i in range(300)]
    src.write_text("datetime;Accelerometer1RMS;Voltage\n" + "\n".join(rows) + "\n")
    table = read_csv(src)
    assert table.delimiter == ";" and list(table.columns) == ["Accelerometer1RMS", "Voltage"]
    out = io.StringIO()
    score_csv(src, out)
    parsed = list(csv.reader(io.StringIO(out.getvalue()), delimiter=";"))
    assert parsed[0] == ["datetime", "Accelerometer1RMS", "Voltage", "anomaly_score", "anomaly_type"]
    assert all(len(r) == 5 for r in parsed[1:]) and len(parsed) == 301


def test_models_score_cli_reports_the_rows_and_strict_refuses(tmp_path: Path) -> None:
    src = tmp_path / "logger.csv"
    _logger_with_clock_step(src)
    cmd = [sys.executable, "-m", "sentinel_cli.main", "models", "score", str(src), "-o", str(tmp_path / "out.csv"),
           "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "timestamps: 1 steps back in time" in done.stdout and "60 rows repeat" in done.stdout
    assert "row 402: 59 min earlier than the row above (step back)" in done.stdout
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 601  # every row scored
    strict = subprocess.run([*cmd, "--strict"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert strict.returncode == 2 and "row 402" in strict.stderr


# -- the real files (skipped without ../shared/data) ------------------------------------------------

@pytest.mark.skipif(not (DATA / "load").is_dir(), reason="no ../shared/data/load")
@pytest.mark.parametrize("zone", ["AEP", "DAYTON"])  # the two date formats
def test_pjm_load_files_are_read_whole_in_time_order(zone: str) -> None:
    path = DATA / "load" / f"{zone}_hourly.csv"
    lines = sum(1 for line in path.open() if line.strip()) - 1
    table = read_csv(path)
    report = table.timestamps
    assert table.rows == lines  # nothing refused, nothing dropped
    assert np.all(np.diff(table.time_s) >= 0)
    assert len(report.repeated) == 4  # the four autumn daylight-saving repeats (README)
    at = np.nonzero(np.isin(table.line_numbers, report.repeated))[0]
    assert all(datetime.fromtimestamp(t, timezone.utc).month == 11 for t in table.time_s[at])  # autumn
    assert 11 <= len(report.gaps) <= 27  # the README's gaps
    assert report.out_of_order > lines // 2  # written newest day first


@pytest.mark.skipif(not (DATA / "skab").is_dir(), reason="no ../shared/data/skab")
def test_skab_semicolon_files_read_with_their_sensors() -> None:
    table = read_csv(DATA / "skab" / "valve1" / "1.csv")
    assert table.delimiter == ";" and table.rows > 1000
    assert {"Accelerometer1RMS", "Volume Flow RateRMS", "anomaly"} <= set(table.columns)
    assert table.timestamps.clean
