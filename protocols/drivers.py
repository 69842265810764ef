"""Turns configured devices into sources, sharing one connection per bus or endpoint."""

from __future__ import annotations

from protocols.config import Device
from protocols.modbus.config import ModbusTcpDevice
from protocols.modbus.source import ModbusTcpConnection, ModbusTcpSource
from protocols.mqtt.config import MqttDevice
from protocols.opcua.config import OpcUaDevice
from protocols.sources import PolledSource, PushedSource


class SourceFactory:
    """Create sources for devices; devices on one endpoint (a gateway, a serial line) share its
    connection and its lock. Close with ``await factory.aclose()``."""

    def __init__(self, edge_id: str = "sentinel") -> None:
        self.edge_id = edge_id
        self._modbus_tcp: dict[tuple[str, int], ModbusTcpConnection] = {}

    def create(self, device: Device) -> PolledSource | PushedSource:
        if isinstance(device, ModbusTcpDevice):
            key = (device.host, device.port)
            conn = self._modbus_tcp.get(key)
            if conn is None:
                conn = self._modbus_tcp[key] = ModbusTcpConnection(device.host, device.port, device.timeout_s)
            return ModbusTcpSource(device, conn)
        if isinstance(device, OpcUaDevice):
            from protocols.opcua.source import OpcUaSource

            return OpcUaSource(device)
        if isinstance(device, MqttDevice):
            from protocols.mqtt.source import MqttSource

            return MqttSource(device, client_id=device.client_id or f"{self.edge_id}-{device.id}")
        raise TypeError(f"no driver for device {device.id!r} ({type(device).__name__})")

    async def aclose(self) -> None:
        for conn in self._modbus_tcp.values():
            conn.close()
        self._modbus_tcp.clear()
