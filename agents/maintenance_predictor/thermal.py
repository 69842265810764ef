"""IEC 60076-7:2018 thermal model of an oil-immersed transformer: hot-spot temperature and ageing.

Steady state (clause 8.2.2, equations for the ultimate rises):

    top-oil rise      d_theta_o = d_theta_or * ((1 + R K^2) / (1 + R))^x
    hot-spot rise     d_theta_h = H g_r K^y           (over top oil)
    hot-spot          theta_h   = theta_a + d_theta_o + d_theta_h

Transient: the difference-equation solution (clause 8.2.3 and its annex), step ``Dt`` in minutes,
with the load factor K(n) and ambient theta_a(n) of step n::

    D theta_o(n)  = Dt / (k11 tau_o) * [((1 + K^2 R)/(1 + R))^x d_theta_or - (theta_o(n-1) - theta_a(n))]
    D d_theta_h1(n) = Dt / (k22 tau_w) * [k21 d_theta_hr K^y - d_theta_h1(n-1)]
    D d_theta_h2(n) = Dt / (tau_o / k22) * [(k21 - 1) d_theta_hr K^y - d_theta_h2(n-1)]
    d_theta_h = d_theta_h1 - d_theta_h2,  theta_h = theta_o + d_theta_h,  d_theta_hr = H g_r

Each of the three is a linear first-order equation ``tau de/dt = -e`` in the distance ``e`` to its
ultimate value (``((1 + K^2 R)/(1 + R))^x d_theta_or + theta_a``, ``k21 d_theta_hr K^y`` and
``(k21 - 1) d_theta_hr K^y``), with ``tau`` = ``k11 tau_o``, ``k22 tau_w`` and ``tau_o / k22``. The
exponent ``x`` acts on the forcing only, so with K and theta_a constant over an input interval each
equation has the exact update ``e(t + Dt) = e(t) exp(-Dt/tau)``. :func:`simulate` applies it once per
interval and transformer (vectorised): the result at every sample is the exact solution of the
standard's differential equations for a load held constant over each interval, whatever the interval
(hourly samples, far above tau_w, included). The standard's difference equations are forward-Euler
steps of the same equations; their limit ``Dt <= tau/2`` is a stability bound, not an accuracy bound:
stepping hourly data at that limit missed the hot spot at the hourly samples by up to 5.9 K (ONAN;
2.7 K ONAF) after a step to 2.1 pu and back, where the exact update is within 0.01 K of a 0.005-min
reference (tests/agents/test_maintenance_predictor.py). The Euler steps remain available
(``max_step_min``) to compare with the standard's own tabulated solution; they approach the exact
update as ``Dt -> 0``. The standard's dynamic worked example (ONAF, load steps over 745 min) comes
out within 0.1 K of its tabulated top-oil and hot-spot temperatures at five of the six times; at
500 min 0.65 K (top oil) and 1.05 K (hot spot) above them, as with its difference equations at
``Dt = 0.5`` min.

Ageing (clause 6.3, equations 2 and 3; Table 3): relative ageing rate
``V = 2^((theta_h - 98)/6)`` for non-thermally-upgraded paper and
``V = exp(15000/(110 + 273) - 15000/(theta_h + 273))`` for thermally upgraded paper; loss of life
``L = sum V_n t_n`` (clause 6.4), in hours.

Thermal constants per cooling mode are the standard's Table 4 (recommended exponents and constants);
the typical rises and loss ratio used when the test report's values are not known are the
recommended thermal characteristics for distribution and power transformers (Table 5). Both are
defaults: values from the transformer's heat-run test report override them.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

__all__ = [
    "COOLING_MODES",
    "PAPER_TYPES",
    "ThermalParameters",
    "ThermalResult",
    "ThermalState",
    "loss_of_life_hours",
    "parameters_for",
    "relative_ageing_rate",
    "simulate",
    "steady_hot_spot_c",
    "steady_hot_spot_rise_k",
    "steady_top_oil_rise_k",
]

PAPER_TYPES = ("normal", "upgraded")

# IEC 60076-7:2018 Table 4: x, y, k11, k21, k22, tau_o (min), tau_w (min).
_TABLE_4: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "ONAN-distribution": (0.8, 1.6, 1.0, 1.0, 2.0, 180.0, 4.0),
    "ONAN-restricted": (0.8, 1.3, 0.5, 3.0, 2.0, 210.0, 10.0),
    "ONAN": (0.8, 1.3, 0.5, 2.0, 2.0, 210.0, 10.0),
    "ONAF-restricted": (0.8, 1.3, 0.5, 3.0, 2.0, 150.0, 7.0),
    "ONAF": (0.8, 1.3, 0.5, 2.0, 2.0, 150.0, 7.0),
    "OF-restricted": (1.0, 1.3, 1.0, 1.45, 1.0, 90.0, 7.0),
    "OF": (1.0, 1.3, 1.0, 1.3, 1.0, 90.0, 7.0),
    "OD": (1.0, 2.0, 1.0, 1.0, 1.0, 90.0, 7.0),
}
# Recommended thermal characteristics (Table 5): R, H, g_r (K), top-oil rise d_theta_or (K).
# H g_r: 23 K distribution ONAN, 26 K ONAN/ONAF, 22 K OF, 29 K OD; every column gives a hot spot of
# 98 degC at rated load and 20 degC ambient.
_TABLE_5: dict[str, tuple[float, float, float, float]] = {
    "ONAN-distribution": (5.0, 1.1, 23.0 / 1.1, 55.0),
    "ONAN": (6.0, 1.3, 26.0 / 1.3, 52.0),
    "ONAF": (6.0, 1.3, 26.0 / 1.3, 52.0),
    "OF": (6.0, 1.3, 22.0 / 1.3, 56.0),
    "OD": (6.0, 1.3, 29.0 / 1.3, 49.0),
}
_TABLE_5["ONAN-restricted"] = _TABLE_5["ONAN"]
_TABLE_5["ONAF-restricted"] = _TABLE_5["ONAF"]
_TABLE_5["OF-restricted"] = _TABLE_5["OF"]

COOLING_MODES = tuple(_TABLE_4)


class ThermalParameters(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One transformer's thermal characteristics (IEC 60076-7 symbols; rises in K, times in min)."""

    x: float  # oil exponent
    y: float  # winding exponent
    k11: float
    k21: float
    k22: float
    tau_o_min: float  # average oil time constant
    tau_w_min: float  # winding time constant
    R: float  # ratio of load losses at rated current to no-load losses
    H: float  # hot-spot factor
    g_r_k: float  # average winding to average oil gradient at rated current
    delta_theta_or_k: float  # top-oil rise at rated losses

    @property
    def hot_spot_gradient_k(self) -> float:
        """d_theta_hr = H g_r: hot-spot to top-oil gradient at rated current."""
        return self.H * self.g_r_k

    def max_step_min(self) -> float:
        """Half the smallest time constant of the difference equations (the standard's limit on Dt)."""
        return 0.5 * min(self.k11 * self.tau_o_min, self.k22 * self.tau_w_min, self.tau_o_min / self.k22)


def parameters_for(cooling_mode: str, **overrides: float) -> ThermalParameters:
    """The standard's constants for a cooling mode, with any figure from the test report overriding.

    ``cooling_mode`` is one of :data:`COOLING_MODES`; an override names a :class:`ThermalParameters`
    field (``delta_theta_or_k=38.3, R=1000``)."""
    try:
        x, y, k11, k21, k22, tau_o, tau_w = _TABLE_4[cooling_mode]
    except KeyError:
        raise ValueError(f"unknown cooling mode {cooling_mode!r}; expected one of {', '.join(COOLING_MODES)}") from None
    r, h, g_r, dtor = _TABLE_5[cooling_mode]
    values = dict(x=x, y=y, k11=k11, k21=k21, k22=k22, tau_o_min=tau_o, tau_w_min=tau_w, R=r, H=h, g_r_k=g_r,
                  delta_theta_or_k=dtor)
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"unknown thermal parameter(s) {', '.join(sorted(unknown))}; expected {', '.join(values)}")
    values.update({k: float(v) for k, v in overrides.items()})
    return ThermalParameters(**values)


def steady_top_oil_rise_k(load_factor: np.ndarray | float, p: ThermalParameters) -> np.ndarray:
    """Ultimate top-oil rise over ambient at load factor K: d_theta_or ((1 + R K^2)/(1 + R))^x."""
    k = np.asarray(load_factor, dtype=np.float64)
    return p.delta_theta_or_k * ((1.0 + p.R * k * k) / (1.0 + p.R)) ** p.x


def steady_hot_spot_rise_k(load_factor: np.ndarray | float, p: ThermalParameters) -> np.ndarray:
    """Ultimate hot-spot rise over top oil at load factor K: H g_r K^y."""
    k = np.asarray(load_factor, dtype=np.float64)
    return p.hot_spot_gradient_k * np.abs(k) ** p.y


def steady_hot_spot_c(load_factor: np.ndarray | float, ambient_c: np.ndarray | float, p: ThermalParameters) -> np.ndarray:
    """Ultimate hot-spot temperature: theta_a + top-oil rise + hot-spot rise."""
    return np.asarray(ambient_c, dtype=np.float64) + steady_top_oil_rise_k(load_factor, p) + steady_hot_spot_rise_k(
        load_factor, p)


class ThermalState(msgspec.Struct, frozen=True, kw_only=True):
    """Initial state, one value per transformer: top-oil temperature and the two hot-spot rise terms."""

    top_oil_c: np.ndarray | float
    delta_theta_h1_k: np.ndarray | float = 0.0
    delta_theta_h2_k: np.ndarray | float = 0.0


class ThermalResult(msgspec.Struct, frozen=True):
    """Temperatures at every sample, shape (transformers, samples)."""

    top_oil_c: np.ndarray
    hot_spot_c: np.ndarray


def _param_arrays(params: ThermalParameters | Sequence[ThermalParameters], n: int) -> dict[str, np.ndarray]:
    plist = [params] * n if isinstance(params, ThermalParameters) else list(params)
    if len(plist) != n:
        raise ValueError(f"{len(plist)} parameter sets for {n} transformers")
    fields = ThermalParameters.__struct_fields__
    out = {f: np.array([getattr(p, f) for p in plist], dtype=np.float64) for f in fields}
    return out


def simulate(
    minutes: np.ndarray,
    load_factor: np.ndarray,
    ambient_c: np.ndarray,
    params: ThermalParameters | Sequence[ThermalParameters],
    initial: ThermalState | None = None,
    max_step_min: float | None = None,
) -> ThermalResult:
    """Top-oil and hot-spot temperature by the standard's differential equations (exact per interval).

    ``minutes`` is the time of each sample, shape (T,) shared or (N, T) per transformer (non-decreasing;
    a repeated time is a step of zero length, so shorter series can be padded with their last sample);
    ``load_factor`` and ``ambient_c`` broadcast to (N, T). Sample n's K and theta_a act over the
    interval ending at sample n. ``initial`` defaults to the steady state at the first sample.

    By default each interval gets the exact exponential update (load and ambient constant over it), so
    the sampling interval costs no accuracy. With ``max_step_min`` the interval is instead cut into
    forward-Euler steps of at most that many minutes (the standard's difference equations, kept for
    comparison with its tabulated solution). The decay factors of all intervals are computed at once;
    Python steps through the samples, vectorised across transformers.
    """
    k = np.atleast_2d(np.asarray(load_factor, dtype=np.float64))
    amb = np.atleast_2d(np.asarray(ambient_c, dtype=np.float64))
    t = np.atleast_2d(np.asarray(minutes, dtype=np.float64))
    n_tr = max(k.shape[0], amb.shape[0], t.shape[0],
               1 if isinstance(params, ThermalParameters) else len(params))
    n_t = max(k.shape[1], amb.shape[1], t.shape[1])
    k, amb, t = (np.broadcast_to(a, (n_tr, n_t)) for a in (k, amb, t))
    if np.any(np.diff(t, axis=1) < 0):
        raise ValueError("sample times must not decrease")
    p = _param_arrays(params, n_tr)
    hgr = p["H"] * p["g_r_k"]
    tau_oil = p["k11"] * p["tau_o_min"]
    tau_h1 = p["k22"] * p["tau_w_min"]
    tau_h2 = p["tau_o_min"] / p["k22"]

    def top_rise(kk: np.ndarray) -> np.ndarray:
        col = (slice(None),) + (None,) * (kk.ndim - 1)
        return p["delta_theta_or_k"][col] * ((1.0 + p["R"][col] * kk * kk) / (1.0 + p["R"][col])) ** p["x"][col]

    def h_rise(kk: np.ndarray) -> np.ndarray:
        col = (slice(None),) + (None,) * (kk.ndim - 1)
        return hgr[col] * np.abs(kk) ** p["y"][col]

    if initial is None:
        theta_o = amb[:, 0] + top_rise(k[:, 0])
        h1 = p["k21"] * h_rise(k[:, 0])
        h2 = (p["k21"] - 1.0) * h_rise(k[:, 0])
    else:
        theta_o = np.broadcast_to(np.asarray(initial.top_oil_c, dtype=np.float64), (n_tr,)).copy()
        h1 = np.broadcast_to(np.asarray(initial.delta_theta_h1_k, dtype=np.float64), (n_tr,)).copy()
        h2 = np.broadcast_to(np.asarray(initial.delta_theta_h2_k, dtype=np.float64), (n_tr,)).copy()
    top = np.empty((n_tr, n_t))
    hot = np.empty((n_tr, n_t))
    top[:, 0] = theta_o
    hot[:, 0] = theta_o + h1 - h2
    dt_all = np.diff(t, axis=1)
    if max_step_min is None:  # exact: e <- e exp(-Dt/tau), all intervals' factors at once
        decay_o, decay_1, decay_2 = (np.exp(-dt_all / tau[:, None]) for tau in (tau_oil, tau_h1, tau_h2))
    else:  # n forward-Euler steps of the difference equations, in closed form: e <- e (1 - sub/tau)^n
        if not max_step_min > 0:
            raise ValueError(f"max_step_min must be positive, got {max_step_min!r}")
        n_steps = np.maximum(np.ceil(dt_all / float(max_step_min)), 1.0)
        sub = dt_all / n_steps
        decay_o, decay_1, decay_2 = ((1.0 - sub / tau[:, None]) ** n_steps for tau in (tau_oil, tau_h1, tau_h2))
    target_o_all = amb + top_rise(k)
    hr_all = h_rise(k)
    k21 = p["k21"]
    for j in range(1, n_t):
        target_o, hr = target_o_all[:, j], hr_all[:, j]
        theta_o = target_o + (theta_o - target_o) * decay_o[:, j - 1]
        h1 = k21 * hr + (h1 - k21 * hr) * decay_1[:, j - 1]
        h2 = (k21 - 1.0) * hr + (h2 - (k21 - 1.0) * hr) * decay_2[:, j - 1]
        top[:, j] = theta_o
        hot[:, j] = theta_o + h1 - h2
    return ThermalResult(top_oil_c=top, hot_spot_c=hot)


def relative_ageing_rate(hot_spot_c: np.ndarray | float, paper: str = "normal") -> np.ndarray:
    """V: 2^((theta_h - 98)/6) for non-upgraded paper, exp(15000/383 - 15000/(theta_h + 273)) for
    thermally upgraded paper (IEC 60076-7:2018 equations 2 and 3, Table 3)."""
    th = np.asarray(hot_spot_c, dtype=np.float64)
    if paper == "normal":
        return np.exp2((th - 98.0) / 6.0)
    if paper == "upgraded":
        return np.exp(15000.0 / (110.0 + 273.0) - 15000.0 / (th + 273.0))
    raise ValueError(f"unknown paper {paper!r}; expected one of {', '.join(PAPER_TYPES)}")


def loss_of_life_hours(minutes: np.ndarray, hot_spot_c: np.ndarray, paper: str = "normal") -> np.ndarray:
    """L = sum of V_n t_n over the intervals (V of the sample ending each interval), in hours;
    one figure per row of ``hot_spot_c`` (or a scalar for a single series)."""
    t = np.asarray(minutes, dtype=np.float64)
    v = relative_ageing_rate(hot_spot_c, paper)
    dt_h = np.diff(t, axis=-1) / 60.0
    return np.sum(v[..., 1:] * dt_h, axis=-1)
