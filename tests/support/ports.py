"""Moving sample configs onto free loopback ports, whatever protocols their devices use."""

from __future__ import annotations

import re

import msgspec

from protocols.config import FirmwareConfig
from protocols.modbus.config import ModbusTcpDevice
from protocols.opcua.config import OpcUaDevice


def free_port() -> int:
    from tests.conftest import free_port as fp

    return fp()


def move_device(device, port_map: dict[int, int]):  # noqa: ANN001, ANN201 - any device type
    """The device with its TCP port replaced (one new port per old port, shared via port_map)."""
    if isinstance(device, ModbusTcpDevice):
        new = port_map.setdefault(device.port, free_port())
        return msgspec.structs.replace(device, host="127.0.0.1", port=new)
    if isinstance(device, OpcUaDevice):
        m = re.match(r"^opc\.tcp://[^/:]+:(\d+)(.*)$", device.url)
        if m:
            new = port_map.setdefault(int(m.group(1)), free_port())
            return msgspec.structs.replace(device, url=f"opc.tcp://127.0.0.1:{new}{m.group(2)}")
    return device


def on_free_ports(config: FirmwareConfig, port_map: dict[int, int] | None = None,
                  hub_url: str | None = None) -> FirmwareConfig:
    """The config with every served endpoint on a free port of 127.0.0.1 (devices that shared a
    port still share one) and, optionally, another hub URL."""
    port_map = {} if port_map is None else port_map
    cfg = msgspec.structs.replace(config, devices=[move_device(d, port_map) for d in config.devices])
    if hub_url is not None:
        cfg = msgspec.structs.replace(cfg, hub=msgspec.structs.replace(cfg.hub, url=hub_url))
    return cfg
