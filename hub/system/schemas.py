"""What the system routes answer."""

from __future__ import annotations

import msgspec

__all__ = ["Health"]


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str
