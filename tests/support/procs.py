"""The `sentinel` command run as a user runs it, as a subprocess that never outlives the test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["sentinel_process"]


@contextmanager
def sentinel_process(*args: str, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """``python -m sentinel_cli.main *args`` with stdout and stderr as text pipes. Leaving the block,
    a process still running (a failed assertion, a timeout) is killed and reaped, its pipes closed."""
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
