"""Run the simulated substations: bind every endpoint, tick physics + anomalies, record the truth.

Modbus TCP and RTU devices are served by :mod:`simulator.modbus_server`, OPC-UA devices by
:mod:`simulator.opcua_server`, and MQTT devices publish to a broker at the address their config
names (:mod:`simulator.mqtt_broker`: one is started there when nothing listens yet) once a second
of scenario time; all from the same values.

::

    async with Simulation(configs, scenario, speed=60.0, seed=1) as sim:
        print(*sim.endpoints, sep="\\n")
        await sim.run()              # forever; anomalies stop at the scenario's end, baseline goes on

Scenario time starts at 0 when ``run()`` starts and runs ``speed`` times faster than the wall clock;
the physics' time of day at t = 0 is ``start_hour`` (default: the current hour in East Africa, so a
dashboard shows a plausible time of day).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Self

import msgspec
import numpy as np

from protocols.config import FirmwareConfig, load_config
from protocols.mqtt.config import MqttDevice
from simulator.injection import Injector
from simulator.modbus_server import EndpointError, ModbusEndpoint
from simulator.mqtt_broker import MqttSimulator
from simulator.opcua_server import OpcUaSimulator
from simulator.physics import GridPhysics
from simulator.plant import DeviceInfo, Plant
from simulator.scenario import (
    AnomalyType,
    Fault,
    Scenario,
    load_scenario,
    resolve_faults,
)

__all__ = ["EAST_AFRICA_TIME", "Simulation", "SimulationError", "TruthInterval", "serve"]

EAST_AFRICA_TIME = timezone(timedelta(hours=3), "EAT")
DEFAULT_TICK_S = 0.1
DEFAULT_PUBLISH_INTERVAL_S = 1.0  # scenario seconds between an MQTT device's messages


log = logging.getLogger(__name__)

class SimulationError(RuntimeError):
    """The simulation cannot start (an endpoint cannot be bound, or it is used out of order)."""


class TruthInterval(msgspec.Struct, frozen=True, kw_only=True):
    """When one anomaly was active on one point: the ground truth for scoring detections."""

    anomaly: int  # index in the scenario's anomalies
    type: AnomalyType
    substation: str
    device_id: str
    metric: str
    start_s: float  # scenario seconds
    end_s: float  # scenario seconds; the anomaly's end, or "now" while it is still active
    active: bool  # still going at the time of the call
    start_wall: datetime | None = None  # UTC; None if run() never ran
    end_wall: datetime | None = None


class Simulation:
    """Simulated substations serving real Modbus TCP/RTU and OPC-UA endpoints and publishing MQTT
    devices to their brokers; an async context manager."""

    def __init__(
        self,
        configs: Sequence[FirmwareConfig],
        scenario: Scenario | None = None,
        *,
        speed: float = 1.0,
        seed: int = 0,
        tick_s: float = DEFAULT_TICK_S,
        start_hour: float | None = None,
        publish_interval_s: float = DEFAULT_PUBLISH_INTERVAL_S,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, not {speed}")
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, not {tick_s}")
        if start_hour is None:
            now = datetime.now(EAST_AFRICA_TIME)
            start_hour = now.hour + now.minute / 60 + now.second / 3600
        self.plant = Plant(configs)
        self.scenario = scenario
        self.speed, self.seed, self.tick_s = float(speed), seed, float(tick_s)
        self.physics = GridPhysics(self.plant, seed=seed, start_hour=start_hour)
        self.injector = Injector(self.plant, scenario, seed=seed)  # raises ScenarioError
        self.servers = [
            ModbusEndpoint(host, port, devices, self.plant.points)
            for (host, port), devices in self.plant.endpoints.items()
        ]
        self.opcua = OpcUaSimulator(
            configs, lambda dev: {m: v for (d, m), v in self.values().items() if d == dev}, tick_s=tick_s
        )
        self._device_points = {d.index: np.array([p.index for p in self.plant.points_of(d)], dtype=np.intp)
                               for d in self.plant.devices if isinstance(d.device, MqttDevice)}
        self.mqtt = MqttSimulator(self.plant.devices, self.device_values, publish_interval_s=publish_interval_s)
        self._faults = resolve_faults(scenario, self.plant) if scenario is not None else []
        self._fault_active = [False] * len(self._faults)
        self._now_s = 0.0
        self._values = np.full(len(self.plant), np.nan)
        self._wall_origin: datetime | None = None  # wall time of scenario t = 0
        self._running = False
        self._entered = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.set_time(self._now_s)  # serve t = 0 from the first request on
        started: list[ModbusEndpoint] = []
        opcua_started = False
        try:
            for server in self.servers:
                await server.start()
                started.append(server)
            await self.opcua.start()
            opcua_started = True
            await self.mqtt.start()
        except EndpointError as exc:
            if opcua_started:
                await self.opcua.stop()
            for server in started:
                await server.stop()
            raise SimulationError(str(exc)) from exc
        self._entered = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
        try:
            await self.mqtt.stop()
        finally:
            await self.opcua.stop()
            for server in self.servers:
                await server.stop()

    @property
    def endpoints(self) -> list[str]:
        """What is served, one line per endpoint."""
        return [s.describe() for s in self.servers] + self.opcua.endpoints + self.mqtt.endpoints

    # -- time -----------------------------------------------------------------------------------

    @property
    def now_s(self) -> float:
        """Scenario time of the values being served."""
        return self._now_s

    def set_time(self, t_s: float) -> np.ndarray:
        """Compute and serve the values at scenario time ``t_s`` (not before the last one); returns them."""
        baseline = self.physics.values(t_s)
        values = self.injector.apply(baseline, t_s, self.physics.step_of(t_s))
        for server in self.servers:
            server.write(values)
        self._now_s, self._values = float(t_s), values
        return values

    def values(self) -> dict[tuple[str, str], float]:
        """The values being served, by (device id, metric); NaN where a sample is missing."""
        return {(p.device.id, p.metric): float(self._values[p.index]) for p in self.plant.points}

    def device_values(self, device: DeviceInfo) -> dict[str, float]:
        """One device's values being served, by metric; NaN where a sample is missing."""
        index = self._device_points.get(device.index)
        points = self.plant.points
        if index is None:
            return {p.metric: float(self._values[p.index]) for p in self.plant.points_of(device)}
        return {points[i].metric: v for i, v in zip(index.tolist(), self._values[index].tolist())}

    async def run(self, duration_s: float | None = None) -> None:
        """Tick every ``tick_s`` wall seconds, from the current scenario time.

        Returns after ``duration_s`` scenario seconds (the wall time is that / speed); with None it
        runs until cancelled, serving the baseline once the scenario's anomalies are over.
        """
        if not self._entered:
            raise SimulationError("run() needs the servers: use `async with Simulation(...) as sim`")
        if self._running:
            raise SimulationError("run() is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        t_start, wall_start = self._now_s, loop.time()
        self._wall_origin = datetime.now(UTC) - timedelta(seconds=t_start / self.speed)
        end = math.inf if duration_s is None else t_start + duration_s
        try:
            next_tick = wall_start
            while True:
                t = min(end, t_start + (loop.time() - wall_start) * self.speed)
                self.set_time(max(t, self._now_s))
                await self._apply_faults(self._now_s)
                self.mqtt.tick(self._now_s)
                if t >= end:
                    return
                next_tick += self.tick_s
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
        finally:
            self._running = False

    # -- faults ---------------------------------------------------------------------------------

    async def _apply_faults(self, t_s: float) -> None:
        """Start or end the scenario's faults due at scenario time t."""
        assert self.scenario is not None or not self._faults
        for i, devices in enumerate(self._faults):
            fault = self.scenario.faults[i]  # type: ignore[union-attr]
            active = fault.start_time <= t_s < fault.end_time
            if active == self._fault_active[i]:
                continue
            self._fault_active[i] = active
            for d in devices:
                log.info("fault %s on %s %s: %s", fault.type, d.substation, d.id, "begins" if active else "ends")
                await self._set_fault(i, fault, d, active)

    async def _set_fault(self, i: int, fault: Fault, device: DeviceInfo, active: bool) -> None:
        """Begin (``active``) or end fault number ``i`` on one device."""
        kind = fault.type
        if isinstance(device.device, MqttDevice):
            await self._set_mqtt_fault(i, fault, device, active)
            return
        if kind == "corrupt_payload":  # resolve_faults refuses it; a scenario built by hand may not
            log.warning("fault corrupt_payload on %s: not an MQTT device", device.id)
            return
        modbus = next((s for s in self.servers if device in s.devices), None)
        if modbus is not None:
            if kind == "server_restart" or len(modbus.devices) == 1:
                if active and modbus.running:
                    await modbus.stop()
                elif not active and not modbus.running:
                    await modbus.start()
            elif active:
                modbus.silent_units.add(device.device.unit_id)
            else:
                modbus.silent_units.discard(device.device.unit_id)
            return
        try:
            endpoint = self.opcua.endpoint_of(device.id)
        except KeyError:
            log.warning("fault on %s: no simulated server for it", device.id)
            return
        await (endpoint.stop() if active else endpoint.start())

    async def _set_mqtt_fault(self, i: int, fault: Fault, device: DeviceInfo, active: bool) -> None:
        if fault.type == "device_stop":
            self.mqtt.set_paused(device, active)
        elif fault.type == "corrupt_payload":
            if active:
                self.mqtt.start_corruption(device, i, fault.start_time, fault.end_time,
                                           fault.count if fault.count is not None else 1.0, fault.kind)
            else:
                self.mqtt.end_corruption(device, i)
        else:  # server_restart: the broker goes away, then comes back on the same port
            endpoint = self.mqtt.endpoint_of(device)
            try:
                done = await (endpoint.stop_broker() if active else endpoint.start_broker())
            except EndpointError as exc:
                log.error("fault server_restart on %s: %s", device.id, exc)
                return
            if not done:
                log.warning("fault server_restart on %s: the broker at %s:%d was not started by the simulator; "
                            "it is left alone", device.id, endpoint.host, endpoint.port)

    # -- ground truth ---------------------------------------------------------------------------

    def wall_time(self, t_s: float) -> datetime | None:
        """The wall-clock time (UTC) of scenario time ``t_s`` in the last run, if there was one."""
        if self._wall_origin is None:
            return None
        return self._wall_origin + timedelta(seconds=t_s / self.speed)

    def scenario_time(self, wall: datetime) -> float | None:
        """The scenario time of a wall-clock instant (UTC) in the last run, if there was one."""
        if self._wall_origin is None:
            return None
        return (wall - self._wall_origin).total_seconds() * self.speed

    def truth(self) -> list[TruthInterval]:
        """Which anomaly was active on which point, from its start up to now (started ones only)."""
        out: list[TruthInterval] = []
        now = self._now_s
        for target in self.injector.targets:
            a = target.anomaly
            if a.start_time > now:
                continue
            end = min(a.end_time, now)
            for index in target.points:
                p = self.plant.points[int(index)]
                out.append(TruthInterval(
                    anomaly=target.index, type=a.type, substation=p.device.substation, device_id=p.device.id,
                    metric=p.metric, start_s=float(a.start_time), end_s=float(end), active=now < a.end_time,
                    start_wall=self.wall_time(a.start_time), end_wall=self.wall_time(end),
                ))
        return out


async def serve(
    config_paths: Sequence[str | os.PathLike[str]],
    scenario_path: str | os.PathLike[str] | None,
    *,
    duration_s: float | None = None,
    speed: float = 1.0,
    seed: int = 0,
    print: Callable[[str], object] = print,  # noqa: A002 - the CLI passes its own printer
) -> list[TruthInterval]:
    """Load configs and scenario, print the endpoints, run; returns the ground truth at the end.

    Config and scenario errors (``ConfigError``, ``ScenarioError``) and ``SimulationError`` are
    raised before anything is served, each as one line naming the file or endpoint. SIGTERM
    (``docker stop``, systemd) ends the run like the end of ``duration_s``: every server, broker
    and serial line is shut down.
    """
    configs = [load_config(p) for p in config_paths]
    scenario = load_scenario(scenario_path, configs) if scenario_path is not None else None
    async with Simulation(configs, scenario, speed=speed, seed=seed) as sim:
        with _sigterm_cancels_this_task() as terminated:
            name = scenario.scenario_name if scenario else "baseline (no anomalies)"
            print(f"scenario: {name}; speed x{speed:g}; seed {seed}")
            for line in sim.endpoints:
                print(f"serving {line}")
            try:
                await sim.run(duration_s)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not terminated or task is None or task.uncancel() > 0:
                    raise
                print("stopped by SIGTERM")
            finally:
                truth = sim.truth()
        print(f"done at t = {sim.now_s:.1f} s; {len(truth)} anomaly intervals injected")
        return truth


@contextlib.contextmanager
def _sigterm_cancels_this_task() -> Iterator[list[bool]]:
    """While inside, SIGTERM cancels the current task (and the list yielded gets a True); a no-op
    off the main thread or where the loop cannot take signal handlers."""
    fired: list[bool] = []
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_sigterm() -> None:
        log.info("SIGTERM: stopping")
        fired.append(True)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False
    try:
        yield fired
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)
