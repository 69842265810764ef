"""``sentinel models load-eval`` as a separate process, on a load file the test writes the way PJM's
files come (rows shuffled, DD-MM-YYYY times, a repeated DST hour, gaps)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np


def _write_load_csv(path: Path, *, bad_line: bool = False) -> None:
    rng = np.random.default_rng(3)
    start = datetime(2016, 10, 1, 1)  # hour-ending: 01:00 is the first hour of 1 October
    n = 150 * 24
    h = np.arange(n)
    hod, day = h % 24, h // 24
    shape = 1.0 + 0.3 * np.exp(-0.5 * ((hod - 18) / 2.5) ** 2)
    weekly = np.where((day + 5) % 7 >= 5, 0.85, 1.0)  # 1 October 2016 was a Saturday
    level = np.exp(np.cumsum(rng.normal(0, 0.01, 150)) - 0.002 * np.arange(150))[day]
    load = 9000 * shape * weekly * level * np.exp(rng.normal(0, 0.015, n))
    rows = [(start + timedelta(hours=int(i)), v) for i, v in zip(h, load)]
    rows.append((datetime(2016, 11, 6, 2), float(load[36 * 24 + 1])))  # the DST hour, given twice
    del rows[2000:2003]  # three hours missing
    order = rng.permutation(len(rows))
    lines = ["Datetime,TEST_MW"] + [f"{rows[i][0]:%d-%m-%Y %H:%M},{rows[i][1]:.0f}" for i in order]
    if bad_line:
        lines.insert(10, "2017-13-45 25:00,1000")
    path.write_text("\n".join(lines) + "\n")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel_cli.main", "models", "load-eval", *args],
                          capture_output=True, text=True, timeout=300)


def test_load_eval_prints_mape_and_coverage_beside_the_baselines(tmp_path: Path) -> None:
    csv = tmp_path / "TEST_hourly.csv"
    _write_load_csv(csv)
    proc = _run("--csv", str(csv), "--history-days", "60", "--years", "2017", "--every", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "TEST_MW" in out and "rows not in time order" in out and "1 hours given twice" in out
    assert "3 hours missing" in out and "60 days of history" in out
    assert "same hour yesterday MAPE" in out and "per-hour linear MAPE" in out and "10-90% coverage" in out
    figures = {}
    for h in ("24", "48"):
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{h} h"))
        mapes = [float(v) for v in re.findall(r"([\d.]+)%", line)]
        assert len(mapes) == 6, line  # four MAPEs, coverage, width
        figures[h] = mapes
    forecaster, yesterday, last_week, linear, coverage, _ = figures["24"]
    assert forecaster < yesterday and forecaster < last_week
    assert forecaster < 5.0 and 50.0 <= coverage <= 100.0


def test_load_eval_names_the_bad_line(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    _write_load_csv(csv, bad_line=True)
    proc = _run("--csv", str(csv), "--no-progress")
    assert proc.returncode == 2
    assert "line 11" in proc.stderr and "sentinel: error:" in proc.stderr
    proc = _run("--csv", str(csv), "--years", "20x7", "--no-progress")
    assert proc.returncode == 2 and "--years" in proc.stderr
