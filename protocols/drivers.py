"""Turns configured devices into sources, sharing one connection per bus or endpoint."""

from __future__ import annotations

from protocols.config import Device
from protocols.modbus.config import ModbusRtuDevice, ModbusTcpDevice
from protocols.modbus.source import ModbusConnection, sources_for
from protocols.mqtt.config import MqttDevice
from protocols.opcua.config import OpcUaDevice
from protocols.sources import PolledSource, PushedSource


class SourceFactory:
    """Create sources for devices; devices on one endpoint (a gateway, a serial line) share its
    connection and its lock. Close with ``await factory.aclose()``."""

    def __init__(self, edge_id: str = "sentinel") -> None:
        self.edge_id = edge_id
        self._modbus: dict[tuple[str, ...], ModbusConnection] = {}

    def create(self, device: Device) -> list[PolledSource | PushedSource]:
        """The sources of one device: usually one; a Modbus device whose points poll at several
        rates gets one per rate."""
        if isinstance(device, ModbusTcpDevice | ModbusRtuDevice):
            key = ModbusConnection.key(device)
            conn = self._modbus.get(key)
            if conn is None:
                conn = self._modbus[key] = ModbusConnection(device)
            return list(sources_for(device, conn))
        if isinstance(device, OpcUaDevice):
            from protocols.opcua.source import OpcUaSource

            return [OpcUaSource(device)]
        if isinstance(device, MqttDevice):
            from protocols.mqtt.source import MqttSource

            return [MqttSource(device, client_id=device.client_id or f"{self.edge_id}-{device.id}")]
        raise TypeError(f"no driver for device {device.id!r} ({type(device).__name__})")

    async def aclose(self) -> None:
        for conn in self._modbus.values():
            conn.close()
        self._modbus.clear()
