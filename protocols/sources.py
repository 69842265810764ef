"""Errors every device driver raises, naming the device and the endpoint."""

from __future__ import annotations


class SourceError(Exception):
    def __init__(self, device_id: str, endpoint: str, reason: str) -> None:
        self.device_id, self.endpoint, self.reason = device_id, endpoint, reason
        super().__init__(f"{device_id} at {endpoint}: {reason}")


class SourceConnectError(SourceError):
    """The device could not be reached."""


class SourceReadError(SourceError):
    """The device was reached but a read failed (timeout, exception response, bad frame)."""
