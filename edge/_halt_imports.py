"""Imports the edge never needs, halted before anything makes them (docs/edge-footprint.md).

httpx imports its command line (``httpx._main``: click, rich and pygments, 3.5 MB resident) whenever
those packages are installed, and the edge never runs it. ``None`` in ``sys.modules`` halts that
import; httpx catches the ImportError and defines a stub ``main`` instead. Imported first by
:mod:`edge.daemon`; a process that imported httpx before keeps what it has.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
