"""Helpers for the simulator tests: the sample configs moved onto free loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from protocols.config import FirmwareConfig, load_config
from tests.conftest import CONFIGS
from tests.support.ports import on_free_ports

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    """Run one coroutine to completion in a fresh event loop, with a time limit."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


def on_free_port(config: FirmwareConfig) -> FirmwareConfig:
    """The config with every endpoint moved to a free port on 127.0.0.1."""
    return on_free_ports(config)


def sample_configs() -> list[FirmwareConfig]:
    """Nairobi then Mombasa, as shipped (fixed ports)."""
    return [load_config(CONFIGS / "nairobi-s1.toml"), load_config(CONFIGS / "mombasa-s1.toml")]


@pytest.fixture
def configs() -> list[FirmwareConfig]:
    """Nairobi then Mombasa, each on its own free port."""
    return [on_free_port(c) for c in sample_configs()]


def device(configs: list[FirmwareConfig], device_id: str):
    return next(d for c in configs for d in c.devices if d.id == device_id)
