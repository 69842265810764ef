"""Phase unbalance of three-phase quantities, per sample, vectorised.

- :func:`nema_unbalance_pct`: NEMA MG-1 (Part 14, unbalanced voltages) "percent unbalance": the largest deviation of the
  three magnitudes from their mean, over the mean, in %. NEMA defines it for line-to-line voltages;
  it is applied here as well to phase-to-neutral voltages and to phase currents, the usual
  practice for feeder monitoring. 350 / 315 / 280 A: mean 315, largest deviation 35, 11.11 %.
- :func:`negative_sequence_unbalance_pct`: the IEC 61000-4-30 / IEC 61000-2-2 voltage unbalance
  factor, |V2| / |V1| in %, from magnitudes and phase angles (the definition IEEE 1159-2019 uses
  for "imbalance" too). EN 50160 and IEC 61000-2-2 set 2 % as the compatibility level.

NaN in any phase gives NaN for that sample.
"""

from __future__ import annotations

import numpy as np

from models.features import phase_imbalance

__all__ = ["nema_unbalance_pct", "negative_sequence_unbalance_pct"]

_A = np.exp(2j * np.pi / 3)  # the 120-degree rotation operator


def nema_unbalance_pct(l1: np.ndarray, l2: np.ndarray, l3: np.ndarray) -> np.ndarray:
    """NEMA MG-1 unbalance in %: max |phase - mean| / mean * 100, per sample."""
    a, b, c = (np.asarray(x, dtype=np.float64) for x in (l1, l2, l3))
    return phase_imbalance(a, b, c) * 100.0


def negative_sequence_unbalance_pct(magnitudes: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """|V2| / |V1| in %, per sample, from ``(3, n)`` magnitudes and angles in degrees (L1, L2, L3).

    V1 = (Va + a Vb + a^2 Vc) / 3, V2 = (Va + a^2 Vb + a Vc) / 3 with a = 1 at 120 degrees. A
    balanced positive sequence (0, -120, +120 degrees) gives 0; a zero positive sequence gives NaN.
    """
    mag = np.asarray(magnitudes, dtype=np.float64)
    ang = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if mag.shape[0] != 3 or mag.shape != ang.shape:
        raise ValueError(f"expected magnitudes and angles shaped (3, n), got {mag.shape} and {ang.shape}")
    v = mag * np.exp(1j * ang)
    v1 = np.abs(v[0] + _A * v[1] + _A * _A * v[2]) / 3.0
    v2 = np.abs(v[0] + _A * _A * v[1] + _A * v[2]) / 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v1 > 0, v2 / v1 * 100.0, np.nan)
