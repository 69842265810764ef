"""The outside world: simulated substations serving real Modbus TCP endpoints, with anomaly injection.

Imports only :mod:`protocols` (plus numpy and pymodbus). See ``simulator/README.md``.
"""

from simulator.physics import GridPhysics
from simulator.plant import Plant, PlantError
from simulator.runner import Simulation, SimulationError, TruthInterval, serve
from simulator.scenario import Anomaly, Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "Anomaly",
    "GridPhysics",
    "Plant",
    "PlantError",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "SimulationError",
    "TruthInterval",
    "load_scenario",
    "parse_scenario",
    "serve",
]
