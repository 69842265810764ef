"""The simulated plant: every device and point named by the firmware configs, flattened once.

Physics, anomaly injection and the Modbus servers all work on the same flat point order (config
order, then device order, then point order), so one numpy array of values feeds all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocols.config import Device, FirmwareConfig, Limits
from protocols.modbus.config import ModbusPoint, ModbusRtuDevice, ModbusTcpDevice
from protocols.reading import sensor_type

__all__ = ["DeviceInfo", "Plant", "PlantError", "PointInfo"]


class PlantError(ValueError):
    """The configs cannot be simulated together (e.g. two devices claim one unit id at one endpoint)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One simulated device and the substation (config) it belongs to."""

    index: int
    substation: str
    device: Device
    limits: Limits

    @property
    def id(self) -> str:
        return self.device.id

    @property
    def endpoint(self) -> tuple[str, str | int]:
        """("host", port) for Modbus TCP; ("rtu", serial port path) for Modbus RTU."""
        if isinstance(self.device, ModbusRtuDevice):
            return ("rtu", self.device.port)
        return (self.device.host, self.device.port)


@dataclass(frozen=True, slots=True)
class PointInfo:
    """One point of one device, at position ``index`` of the plant's value array."""

    index: int
    device: DeviceInfo
    point: ModbusPoint

    @property
    def metric(self) -> str:
        return self.point.metric

    @property
    def sensor_type(self) -> str:
        return sensor_type(self.point.metric)

    @property
    def nominal(self) -> float | None:
        """The base of ``*_pct`` anomalies: the point's nominal; for frequency, the config's nominal Hz."""
        if self.point.nominal is not None:
            return self.point.nominal
        if self.sensor_type == "frequency" and self.point.unit in ("Hz", ""):
            return self.device.limits.frequency_nominal_hz
        return None


class Plant:
    """All devices and points of a set of firmware configs, in one flat order."""

    def __init__(self, configs: Sequence[FirmwareConfig]) -> None:
        if not configs:
            raise PlantError("no firmware configs: nothing to simulate")
        devices: list[DeviceInfo] = []
        points: list[PointInfo] = []
        for config in configs:
            for device in config.devices:
                info = DeviceInfo(len(devices), config.identity.substation, device, config.limits)
                devices.append(info)
                base = len(points)
                points.extend(PointInfo(base + i, info, p) for i, p in enumerate(device.points))
        self.devices: tuple[DeviceInfo, ...] = tuple(devices)
        self.points: tuple[PointInfo, ...] = tuple(points)
        # Modbus endpoints; OPC-UA devices are served by simulator.opcua_server from the same values
        modbus = [d for d in self.devices if isinstance(d.device, ModbusTcpDevice | ModbusRtuDevice)]
        self.endpoints: dict[tuple[str, int], tuple[DeviceInfo, ...]] = _group_by_endpoint(modbus)

    def __len__(self) -> int:
        return len(self.points)

    def find_devices(self, device_id: str, substation: str | None = None) -> list[DeviceInfo]:
        """Devices with this id (in every substation, or only in ``substation``)."""
        return [
            d for d in self.devices
            if d.id == device_id and (substation is None or d.substation == substation)
        ]

    def points_of(self, device: DeviceInfo) -> list[PointInfo]:
        return [p for p in self.points if p.device is device]


def _group_by_endpoint(devices: Sequence[DeviceInfo]) -> dict[tuple[str, int], tuple[DeviceInfo, ...]]:
    """Devices per (host, port); two devices may not share a unit id at one endpoint."""
    groups: dict[tuple[str, int], list[DeviceInfo]] = {}
    for d in devices:
        group = groups.setdefault(d.endpoint, [])
        clash = next((o for o in group if o.device.unit_id == d.device.unit_id), None)
        if clash is not None:
            host, port = d.endpoint
            where = f"modbus_rtu {port}" if host == "rtu" else f"modbus_tcp {host}:{port}"
            raise PlantError(
                f"{where} unit {d.device.unit_id} is claimed by both "
                f"{clash.substation} {clash.id} and {d.substation} {d.id}"
            )
        group.append(d)
    return {k: tuple(sorted(v, key=lambda d: d.device.unit_id)) for k, v in groups.items()}
