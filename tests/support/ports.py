"""Moving sample configs onto free loopback ports, whatever protocols their devices use."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from protocols.config import FirmwareConfig
from protocols.modbus.config import ModbusRtuDevice, ModbusTcpDevice
from protocols.mqtt.config import MqttDevice
from protocols.opcua.config import OpcUaDevice


def free_port() -> int:
    from tests.conftest import free_port as fp

    return fp()


def move_device(device, port_map: dict[int, int], serial_dir: str | Path | None = None):  # noqa: ANN001, ANN201
    """The device with its TCP port replaced (one new port per old port, shared via port_map) and,
    with ``serial_dir``, its serial line moved into that directory (same file name)."""
    if isinstance(device, ModbusTcpDevice | MqttDevice):
        new = port_map.setdefault(device.port, free_port())
        return msgspec.structs.replace(device, host="127.0.0.1", port=new)
    if isinstance(device, ModbusRtuDevice):
        if serial_dir is None:
            return device
        return msgspec.structs.replace(device, port=str(Path(serial_dir) / Path(device.port).name))
    if isinstance(device, OpcUaDevice):
        m = re.match(r"^opc\.tcp://[^/:]+:(\d+)(.*)$", device.url)
        if m:
            new = port_map.setdefault(int(m.group(1)), free_port())
            return msgspec.structs.replace(device, url=f"opc.tcp://127.0.0.1:{new}{m.group(2)}")
    return device


def on_free_ports(config: FirmwareConfig, port_map: dict[int, int] | None = None,
                  hub_url: str | None = None, serial_dir: str | Path | None = None) -> FirmwareConfig:
    """The config with every served endpoint (Modbus TCP, OPC-UA, MQTT broker, the OT log broker) on a free port of
    127.0.0.1 (devices that shared a port still share one), with ``serial_dir`` its serial lines
    in that directory, and, optionally, another hub URL."""
    port_map = {} if port_map is None else port_map
    cfg = msgspec.structs.replace(config, devices=[move_device(d, port_map, serial_dir) for d in config.devices])
    ot = cfg.ot_logs
    if ot is not None and ot.mqtt is not None:  # the OT log broker moves with the devices' broker
        mqtt = msgspec.structs.replace(ot.mqtt, host="127.0.0.1", port=port_map.setdefault(ot.mqtt.port, free_port()))
        cfg = msgspec.structs.replace(cfg, ot_logs=msgspec.structs.replace(ot, mqtt=mqtt))
    if hub_url is not None:
        cfg = msgspec.structs.replace(cfg, hub=msgspec.structs.replace(cfg.hub, url=hub_url))
    return cfg
