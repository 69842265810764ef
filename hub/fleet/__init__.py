"""The fleet: edges, substations and devices, and whether the hub hears from them.

- :mod:`.liveness`: when the hub last heard from each edge and device; ``edge_offline`` incidents,
  ``device_offline`` ones resolved when data returns; stale substations.
- :mod:`.status`: the grid status served (``GET /grid-status``): the grid monitor's verdict while a
  substation is live, ``UNKNOWN`` when it is not.
- :mod:`.routes`: ``GET /fleet``.
"""

from hub.fleet.liveness import (
    AGENT,
    DEVICE_OFFLINE,
    EDGE_OFFLINE,
    DeviceLiveness,
    EdgeLiveness,
    Liveness,
    LivenessSettings,
    SubstationLiveness,
    active_incidents,
    settings_from_env,
)
from hub.fleet.routes import ROUTES
from hub.fleet.status import UNKNOWN, SubstationStatus, grid_status

__all__ = ["AGENT", "DEVICE_OFFLINE", "EDGE_OFFLINE", "ROUTES", "UNKNOWN", "DeviceLiveness", "EdgeLiveness",
           "Liveness", "LivenessSettings", "SubstationLiveness", "SubstationStatus", "active_incidents",
           "grid_status", "settings_from_env"]
