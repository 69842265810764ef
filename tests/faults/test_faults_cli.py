"""`sentinel sim faults` as a user runs it: a short run prints what it injected and the ledger, writes
its JSON report, exits 0; a wrong fault name is a usage error naming the known ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]


def sentinel(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel_cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_a_short_run_accounts_for_every_reading(tmp_path: Path) -> None:
    from sentinel_cli.pgserver import find_bindir

    find_bindir()  # PostgreSQL's binaries, or this fails naming where it looked
    report = tmp_path / "faults.json"
    done = sentinel("sim", "faults", "--duration", "6s", "--faults", "link,hub_kill", "--calm", "0.5", "1",
                    "--seed", "3", "--report", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: every reading accounted for" in done.stdout
    summary = json.loads(report.read_text())
    led = summary["ledger"]
    assert summary["faults_injected"] >= 1 and summary["problems"] == []
    assert led["produced"] > 0 and led["at_hub_distinct"] == led["produced"] and led["duplicates"] == 0
    assert led["digest_edge"] == led["digest_hub"]
    assert set(summary["faults"]) <= {"link", "hub_kill"}
    for kind, stats in summary["faults"].items():
        assert stats["not_recovered"] == 0, kind


def test_an_unknown_fault_is_refused_by_name() -> None:
    done = sentinel("sim", "faults", "--faults", "hub_kill,meteor", timeout=60)
    assert done.returncode == 2
    assert "unknown meteor" in done.stderr and "disk_full" in done.stderr


def test_a_bad_duration_is_refused() -> None:
    done = sentinel("sim", "faults", "--duration", "soon", timeout=60)
    assert done.returncode == 2
    assert "not a duration: 'soon'" in done.stderr
