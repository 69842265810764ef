"""The test helper that runs `sentinel` as a subprocess leaves nothing running behind a failed test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.procs import sentinel_process


def test_a_failure_inside_the_block_kills_and_reaps_the_process(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="the test failed"), \
            sentinel_process("hub", "serve", "--port", str(free_port()), cwd=tmp_path) as proc:
        assert proc.poll() is None  # a hub serves until stopped
        raise AssertionError("the test failed")
    assert proc.returncode is not None  # killed and reaped
    assert proc.stdout is not None and proc.stdout.closed and proc.stderr is not None and proc.stderr.closed


def test_a_finished_process_keeps_its_exit_status(tmp_path: Path) -> None:
    with sentinel_process("hub", "serve", "--database", "mysql://x", cwd=tmp_path) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "mysql" in err
