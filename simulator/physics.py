"""Plausible, deterministic signals for every point of the plant, vectorised over devices.

Each device carries a load process; every quantity a point can name is computed per device as one
"channel" (a column of a devices x channels matrix), and a point's value is one gather from that
matrix times the point's base (its nominal, for per-unit channels) plus an offset (for unit changes):

- load: a daily curve with a morning (~08:30) and a higher evening (~19:30) peak, 40-90 % of the
  rating, shifted and scaled a little per device, times a slow random factor (sigma 2 %, tau 10 min);
- voltages: nominal x (1.004 - 0.012 x (load - 0.42)), a fixed phase unbalance (<= 0.25 %) and
  measurement noise (0.2 %); they stay within +-2 % of nominal;
- currents: rating x load x (1 + phase unbalance <= 3 %), noise 0.3 %;
- frequency: the config's nominal plus one grid-wide Ornstein-Uhlenbeck walk (sigma 0.02 Hz,
  tau 5 min); every meter reads it with 1 mHz noise;
- power factor 0.88-0.97 rising a little with load; active, reactive and apparent power computed
  from the same noisy voltages, currents and power factor (P = sum(V_LL/sqrt3 x I) x pf);
- transformer temperatures after IEC 60076-7 (loosely): ambient 22 degC +- 5 K (peak 15:00), top-oil
  rise 40 K x ((1 + R K^2) / (1 + R))^0.8 with R = 5 and tau 90 min, winding gradient 20 K x K^1.3
  with tau 7 min, K being the per-unit load.

State (the frequency walk, load factors and thermal rises) evolves on a fixed grid of ``step_s``
simulated seconds from a seeded stream, and the measurement noise of step k comes from a
counter-based generator keyed by (seed, k): the values at simulated time t depend only on the
seed, the configs, ``start_hour`` and t, never on how often or how irregularly they are asked for.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from simulator.plant import Plant, PlantError, PointInfo

__all__ = ["Channel", "GridPhysics", "counter_rng", "daily_load"]

# Load process
LOAD_SIGMA = 0.02  # stationary sigma of the slow random load factor
LOAD_TAU_S = 600.0
# Grid frequency
FREQUENCY_SIGMA_HZ = 0.02
FREQUENCY_TAU_S = 300.0
# Transformer thermal model (IEC 60076-7 style)
OIL_RISE_RATED_K = 40.0
OIL_TAU_S = 90 * 60.0
WARM_UP_H = 8.0  # five oil time constants and more: the state at t = 0 forgets where it started
OIL_EXPONENT = 0.8  # n
LOSS_RATIO = 5.0  # R: load losses at rated current / no-load losses
WINDING_GRADIENT_RATED_K = 20.0
WINDING_TAU_S = 7 * 60.0
WINDING_EXPONENT = 1.3  # y (m in the brief)
AMBIENT_MEAN_C = 22.0
AMBIENT_SWING_K = 5.0
AMBIENT_PEAK_HOUR = 15.0
# Defaults for points that do not say their nominal
DEFAULT_VOLTAGE_KV = 11.0
DEFAULT_CURRENT_A = 400.0

_NOISE_STREAM = 0x4E4F495345  # "NOISE": key of the counter-based measurement noise


class Channel(enum.IntEnum):
    """Per-device quantities; per-unit ones are multiplied by the point's base."""

    VOLTAGE_L1 = 0  # per unit
    VOLTAGE_L2 = 1
    VOLTAGE_L3 = 2
    VOLTAGE_AVG = 3
    CURRENT_L1 = 4  # per unit of the rating
    CURRENT_L2 = 5
    CURRENT_L3 = 6
    CURRENT_AVG = 7
    CURRENT_N = 8
    LOAD_CURRENT = 9
    FREQUENCY = 10  # Hz
    ACTIVE_POWER = 11  # MW
    REACTIVE_POWER = 12  # Mvar
    APPARENT_POWER = 13  # MVA
    POWER_FACTOR = 14
    AMBIENT_TEMPERATURE = 15  # degC
    OIL_TEMPERATURE = 16
    WINDING_TEMPERATURE = 17
    CONSTANT = 18  # 1.0 (plus 0.2 % noise): a point the model does not know serves its nominal


_PER_UNIT = {
    Channel.VOLTAGE_L1, Channel.VOLTAGE_L2, Channel.VOLTAGE_L3, Channel.VOLTAGE_AVG,
    Channel.CURRENT_L1, Channel.CURRENT_L2, Channel.CURRENT_L3, Channel.CURRENT_AVG,
    Channel.CURRENT_N, Channel.LOAD_CURRENT, Channel.CONSTANT,
}
_METRIC_CHANNEL = {c.name.lower(): c for c in Channel if c is not Channel.CONSTANT}
_METRIC_CHANNEL |= {"voltage": Channel.VOLTAGE_AVG, "current": Channel.CURRENT_AVG}

# unit (lower case) -> (factor, offset) from the channel's own unit; per quantity family
_VOLTAGE_UNITS = {"kv": 1.0, "v": 1000.0, "": 1.0}
_CURRENT_UNITS = {"a": 1.0, "ka": 0.001, "": 1.0}
_POWER_UNITS = {
    "mw": 1.0, "kw": 1e3, "w": 1e6, "mva": 1.0, "kva": 1e3, "va": 1e6,
    "mvar": 1.0, "kvar": 1e3, "var": 1e6, "": 1.0,
}
_TEMPERATURE_UNITS = {"degc": (1.0, 0.0), "°c": (1.0, 0.0), "c": (1.0, 0.0), "": (1.0, 0.0),
                      "k": (1.0, 273.15), "degf": (1.8, 32.0), "°f": (1.8, 32.0)}
_POWER_FACTOR_UNITS = {"": 1.0, "%": 100.0}
_FREQUENCY_UNITS = {"hz": 1.0, "": 1.0}


def daily_load(hour: np.ndarray | float) -> np.ndarray:
    """Load as a fraction of rating at local ``hour`` (0-24): ~0.42 at night, ~0.75 at 08:30, ~0.89 at 19:30."""
    h = np.asarray(hour, dtype=np.float64)

    def bump(centre: float, width_h: float) -> np.ndarray:
        d = (h - centre + 12.0) % 24.0 - 12.0  # circular distance in hours
        return np.exp(-0.5 * (d / width_h) ** 2)

    return 0.42 + 0.30 * bump(8.5, 1.8) + 0.12 * bump(13.5, 3.0) + 0.45 * bump(19.5, 2.0)


def counter_rng(seed: int, stream: int, step: int) -> np.random.Generator:
    """A generator that depends only on (seed, stream, step): random access to a noise sequence."""
    key = ((seed & (2**64 - 1)) << 64) | (stream & (2**64 - 1))
    return np.random.Generator(np.random.Philox(key=key, counter=step))


def _linear_recursion(x0: np.ndarray, a: float, u: np.ndarray) -> np.ndarray:
    """x_j = a x_{j-1} + u_j for the m rows of u, vectorised: returns the (m, n) path after x0."""
    m = u.shape[0]
    out = np.empty_like(u)
    chunk = max(1, int(18.0 / -math.log(a)))  # a^-chunk stays below ~1e8: no loss of precision
    x = np.asarray(x0, dtype=np.float64)
    for lo in range(0, m, chunk):
        hi = min(m, lo + chunk)
        j = np.arange(1, hi - lo + 1, dtype=np.float64)[:, None]
        acc = np.cumsum(u[lo:hi] * a ** -j, axis=0)
        out[lo:hi] = a ** j * (x + acc)
        x = out[hi - 1]
    return out


class GridPhysics:
    """The baseline (anomaly-free) value of every plant point at any simulated time."""

    def __init__(self, plant: Plant, *, seed: int = 0, start_hour: float = 0.0, step_s: float = 1.0) -> None:
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        self.plant = plant
        self.seed = seed
        self.start_hour = float(start_hour) % 24.0
        self.step_s = float(step_s)
        n = len(plant.devices)
        self._init_device_parameters(np.random.default_rng([seed & (2**64 - 1), 1]), n)
        self._walk_rng = np.random.default_rng([seed & (2**64 - 1), 2])
        self._init_points(plant)
        # state at step self._k
        self._k = 0
        self._frequency_dev = np.zeros(1)
        self._load_dev = np.zeros(n)
        self._warm_start()

    # -- set-up ---------------------------------------------------------------------------------

    def _init_device_parameters(self, rng: np.random.Generator, n: int) -> None:
        self._load_scale = rng.uniform(0.96, 1.02, n)
        self._load_shift_h = rng.uniform(-0.33, 0.33, n)
        self._voltage_unbalance = np.clip(rng.normal(0.0, 0.0012, (n, 3)), -0.0025, 0.0025)
        self._current_unbalance = np.clip(rng.normal(0.0, 0.015, (n, 3)), -0.03, 0.03)
        self._pf_base = rng.uniform(0.90, 0.94, n)
        substations = sorted({d.substation for d in self.plant.devices})
        offsets = dict(zip(substations, rng.normal(0.0, 1.0, len(substations))))
        self._ambient_mean = np.array([AMBIENT_MEAN_C + offsets[d.substation] for d in self.plant.devices])
        self._frequency_nominal = np.array([d.limits.frequency_nominal_hz for d in self.plant.devices])
        self._rated_kv = np.array([_rated(self.plant.points_of(d), "voltage", DEFAULT_VOLTAGE_KV) for d in self.plant.devices])
        self._rated_a = np.array([_rated(self.plant.points_of(d), "current", DEFAULT_CURRENT_A) for d in self.plant.devices])

    def _init_points(self, plant: Plant) -> None:
        n = len(plant.points)
        self._point_device = np.array([p.device.index for p in plant.points], dtype=np.int64)
        self._point_channel = np.empty(n, dtype=np.int64)
        self._point_factor = np.empty(n)
        self._point_offset = np.empty(n)
        for p in plant.points:
            channel, factor, offset = _point_mapping(p, self._rated_kv[p.device.index], self._rated_a[p.device.index])
            self._point_channel[p.index], self._point_factor[p.index], self._point_offset[p.index] = channel, factor, offset

    def _warm_start(self, hours: float = WARM_UP_H, dt: float = 60.0) -> None:
        """Oil and winding temperatures at t = 0 as the load of the hours before left them (the
        load's random factor at 0), not at the steady state of the load at 0: a transformer in the
        morning ramp lags its load, and a simulation started then should too."""
        t = np.arange(-hours * 3600.0, dt / 2, dt)
        load = self._load_at(t, np.zeros((t.size, len(self._load_dev))))
        a_o, a_w = math.exp(-dt / OIL_TAU_S), math.exp(-dt / WINDING_TAU_S)
        self._oil_rise = _linear_recursion(self._oil_rise_ss(load[0]), a_o,
                                           (1 - a_o) * self._oil_rise_ss(load[1:]))[-1]
        self._winding_gradient = _linear_recursion(self._winding_gradient_ss(load[0]), a_w,
                                                   (1 - a_w) * self._winding_gradient_ss(load[1:]))[-1]

    # -- the model ------------------------------------------------------------------------------

    def _hours(self, t_s: np.ndarray) -> np.ndarray:
        return (self.start_hour + np.asarray(t_s) / 3600.0) % 24.0

    def _load_at(self, t_s: np.ndarray, load_dev: np.ndarray) -> np.ndarray:
        """Per-unit load, shape (len(t_s), devices)."""
        hours = self._hours(t_s)[:, None] - self._load_shift_h[None, :]
        return daily_load(hours) * self._load_scale[None, :] * (1.0 + load_dev)

    def _ambient_at(self, t_s: np.ndarray) -> np.ndarray:
        phase = 2 * np.pi * (self._hours(t_s) - AMBIENT_PEAK_HOUR) / 24.0
        return self._ambient_mean[None, :] + AMBIENT_SWING_K * np.cos(phase)[:, None]

    @staticmethod
    def _oil_rise_ss(load: np.ndarray) -> np.ndarray:
        return OIL_RISE_RATED_K * ((1 + LOSS_RATIO * load**2) / (1 + LOSS_RATIO)) ** OIL_EXPONENT

    @staticmethod
    def _winding_gradient_ss(load: np.ndarray) -> np.ndarray:
        return WINDING_GRADIENT_RATED_K * np.maximum(load, 0.0) ** WINDING_EXPONENT

    def _advance(self, k: int) -> None:
        """Move the state from step self._k to step k (k >= self._k), all steps at once."""
        m = k - self._k
        if m <= 0:
            return
        dt = self.step_s
        t = (self._k + np.arange(1, m + 1)) * dt
        z = self._walk_rng.standard_normal((m, 1 + len(self._load_dev)))
        a_f = math.exp(-dt / FREQUENCY_TAU_S)
        a_l = math.exp(-dt / LOAD_TAU_S)
        freq = _linear_recursion(self._frequency_dev, a_f, FREQUENCY_SIGMA_HZ * math.sqrt(1 - a_f**2) * z[:, :1])
        load_dev = _linear_recursion(self._load_dev, a_l, LOAD_SIGMA * math.sqrt(1 - a_l**2) * z[:, 1:])
        load = self._load_at(t, load_dev)
        a_o = math.exp(-dt / OIL_TAU_S)
        a_w = math.exp(-dt / WINDING_TAU_S)
        oil = _linear_recursion(self._oil_rise, a_o, (1 - a_o) * self._oil_rise_ss(load))
        winding = _linear_recursion(self._winding_gradient, a_w, (1 - a_w) * self._winding_gradient_ss(load))
        self._k = k
        self._frequency_dev, self._load_dev = freq[-1], load_dev[-1]
        self._oil_rise, self._winding_gradient = oil[-1], winding[-1]

    def step_of(self, t_s: float) -> int:
        """The index of the simulated step that holds at time ``t_s``."""
        return int(math.floor(t_s / self.step_s + 1e-9))

    def channels(self, t_s: float) -> np.ndarray:
        """The (devices, channels) matrix at simulated time ``t_s`` (never before the last call)."""
        k = self.step_of(t_s)
        if k < self._k:
            raise ValueError(f"simulated time only moves forward: asked for {t_s} s after step {self._k}")
        self._advance(k)
        t = np.array([k * self.step_s])
        n = len(self._load_dev)
        z = counter_rng(self.seed, _NOISE_STREAM, k).standard_normal((13, n))
        load = self._load_at(t, self._load_dev[None, :])[0]
        v = (1.004 - 0.012 * (load - 0.42))[:, None] + self._voltage_unbalance + 0.002 * z[0:3].T
        i = (load[:, None] * (1.0 + self._current_unbalance)) * (1.0 + 0.003 * z[3:6].T)
        pf = np.clip(self._pf_base + 0.03 * (load - 0.65) + 0.002 * z[6], 0.70, 0.999)
        apparent = np.sum(v * self._rated_kv[:, None] * i * self._rated_a[:, None], axis=1) / math.sqrt(3) / 1000.0
        neutral = np.abs(i @ np.exp(-2j * np.pi * np.arange(3) / 3))
        ambient = self._ambient_at(t)[0] + 0.05 * z[7]
        oil = ambient + self._oil_rise + 0.1 * z[8]
        out = np.empty((n, len(Channel)))
        out[:, Channel.VOLTAGE_L1:Channel.VOLTAGE_L3 + 1] = v
        out[:, Channel.VOLTAGE_AVG] = v.mean(axis=1)
        out[:, Channel.CURRENT_L1:Channel.CURRENT_L3 + 1] = i
        out[:, Channel.CURRENT_AVG] = i.mean(axis=1)
        out[:, Channel.CURRENT_N] = neutral
        out[:, Channel.LOAD_CURRENT] = load * (1.0 + 0.003 * z[9])
        out[:, Channel.FREQUENCY] = self._frequency_nominal + self._frequency_dev[0] + 0.001 * z[10]
        out[:, Channel.ACTIVE_POWER] = apparent * pf
        out[:, Channel.REACTIVE_POWER] = apparent * np.sqrt(1.0 - pf**2)
        out[:, Channel.APPARENT_POWER] = apparent
        out[:, Channel.POWER_FACTOR] = pf
        out[:, Channel.AMBIENT_TEMPERATURE] = ambient
        out[:, Channel.OIL_TEMPERATURE] = oil
        out[:, Channel.WINDING_TEMPERATURE] = oil + self._winding_gradient + 0.1 * z[11]
        out[:, Channel.CONSTANT] = 1.0 + 0.002 * z[12]
        return out

    def values(self, t_s: float) -> np.ndarray:
        """The value of every plant point (plant order, in each point's unit) at simulated time ``t_s``."""
        m = self.channels(t_s)
        return m[self._point_device, self._point_channel] * self._point_factor + self._point_offset

    def series(self, times_s: np.ndarray) -> np.ndarray:
        """Values at increasing times: shape (len(times_s), points). For tests and offline use."""
        return np.stack([self.values(float(t)) for t in times_s])


def _rated(points: list[PointInfo], family: str, default: float) -> float:
    """A device's rated line voltage (kV) or current (A), from the nominal of its points."""
    for p in points:
        metric_family = "current" if p.metric == "load_current" else p.sensor_type
        if metric_family != family or p.point.nominal is None:
            continue
        units = _VOLTAGE_UNITS if family == "voltage" else _CURRENT_UNITS
        factor = units.get(p.point.unit.lower())
        if factor is not None:
            return p.point.nominal / factor
    return default


def _point_mapping(p: PointInfo, rated_kv: float, rated_a: float) -> tuple[Channel, float, float]:
    """(channel, factor, offset) with value = channel x factor + offset, in the point's unit."""
    channel = _METRIC_CHANNEL.get(p.metric, Channel.CONSTANT)
    unit = p.point.unit.lower()
    nominal = p.point.nominal

    def unit_factor(table: dict[str, float]) -> float:
        if unit not in table:
            raise PlantError(
                f"{p.device.substation} {p.device.id} {p.metric}: cannot simulate unit {p.point.unit!r} "
                f"(known: {', '.join(repr(u) for u in table if u)})"
            )
        return table[unit]

    if channel in _PER_UNIT and channel is not Channel.CONSTANT:
        if channel <= Channel.VOLTAGE_AVG:
            return channel, nominal if nominal is not None else rated_kv * unit_factor(_VOLTAGE_UNITS), 0.0
        return channel, nominal if nominal is not None else rated_a * unit_factor(_CURRENT_UNITS), 0.0
    if channel is Channel.CONSTANT:
        return channel, nominal if nominal is not None else 0.0, 0.0
    if channel in (Channel.ACTIVE_POWER, Channel.REACTIVE_POWER, Channel.APPARENT_POWER):
        return channel, unit_factor(_POWER_UNITS), 0.0
    if channel in (Channel.AMBIENT_TEMPERATURE, Channel.OIL_TEMPERATURE, Channel.WINDING_TEMPERATURE):
        if unit not in _TEMPERATURE_UNITS:
            unit_factor({k: v[0] for k, v in _TEMPERATURE_UNITS.items()})
        return channel, *_TEMPERATURE_UNITS[unit]
    return channel, unit_factor(_POWER_FACTOR_UNITS if channel is Channel.POWER_FACTOR else _FREQUENCY_UNITS), 0.0
