"""A model's manifest: what it is, what it was trained on, how to read its output. Signed by the hub.

The manifest travels beside the ``.onnx`` file; its exact JSON bytes are what the ed25519 signature
covers, and it names the ``.onnx`` file's sha256, so the pair verifies as a whole
(:mod:`models.signing`). The runtime needs nothing else to score with the model: the feature spec
says how to build its input, ``output`` and ``orientation`` how to read its raw score, and
``calibration`` how to turn that into 0..1.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

import msgspec
import numpy as np

from models.features import FeatureSpec

__all__ = ["MANIFEST_FORMAT", "MODEL_KINDS", "Calibration", "Manifest", "TrainingData", "decode_manifest",
           "encode_manifest"]

MANIFEST_FORMAT = 1
MODEL_KINDS = ("isolation_forest", "lof", "mahalanobis", "risk_classifier")
ModelKind = Literal["isolation_forest", "lof", "mahalanobis", "risk_classifier"]


class Calibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    """Raw score -> 0..1.

    ``ecdf_tail`` (unsupervised models): the empirical CDF of the raw scores of held-out normal
    training windows, given as ``quantiles`` at probability ``levels``, continued past the last
    quantile by an exponential tail (``tail_scale``: the mean excess over the 99th percentile).
    The result ``q`` reads "more anomalous than a share ``q`` of normal windows".
    ``probability`` (the risk classifier): the raw score already is a probability.

    :meth:`alarm_score` puts ``q`` on the detectors' scale, where 0.5 is the alarm threshold:
    with surprise ``u = -log10(1 - q)``, ``u^4 / (u^4 + alarm_surprise^4)``; the default
    ``alarm_surprise`` 3 raises an alarm for a window rarer than 1 in 1,000 normal ones.
    """

    kind: Literal["ecdf_tail", "probability"]
    levels: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = ()
    tail_scale: float = 1.0
    alarm_surprise: Annotated[float, msgspec.Meta(gt=0)] = 3.0

    def __post_init__(self) -> None:
        if self.kind == "ecdf_tail":
            if len(self.levels) < 2 or len(self.levels) != len(self.quantiles):
                raise ValueError("ecdf_tail calibration needs matching levels and quantiles (two or more)")
            if any(b < a for a, b in zip(self.quantiles, self.quantiles[1:])):
                raise ValueError("calibration quantiles must not decrease")

    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.levels, dtype=np.float64), np.asarray(self.quantiles, dtype=np.float64)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probability-like score 0..1 of raw scores (higher raw = more anomalous)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.kind == "probability":
            return np.clip(raw, 0.0, 1.0)
        levels, quantiles = self._table
        # ties in the quantiles (a discrete score): take the highest level of the tie
        q = np.interp(raw, quantiles, levels, left=0.0)
        top_q, top_level = quantiles[-1], levels[-1]
        tail = 1.0 - (1.0 - top_level) * np.exp(-(raw - top_q) / max(self.tail_scale, 1e-12))
        return np.where(raw > top_q, tail, q)

    def alarm_score(self, calibrated: np.ndarray) -> np.ndarray:
        """Calibrated 0..1 -> the combined score's scale (0.5 = alarm)."""
        p = np.clip(np.asarray(calibrated, dtype=np.float64), 0.0, 1.0)
        if self.kind == "probability":
            return p
        surprise = -np.log10(np.maximum(1.0 - p, 1e-12))
        s4 = surprise ** 4
        return s4 / (s4 + self.alarm_surprise ** 4)


class TrainingData(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What the model learnt from: time range (ISO 8601, UTC), rows, and where they came from.

    ``dropped_inputs``: columns of the training data left out of the model (all missing or constant);
    the inputs it reads are its ``feature_spec.inputs``. Empty fields are not written, so a manifest
    without dropped inputs reads the same on an edge that predates the field.
    """

    start: str | None
    end: str | None
    rows: int
    source: str  # "csv:<file name>", "readings:<n devices>", "arrays"
    series: tuple[str, ...] = ()  # the groups (devices) whose windows were used
    dropped_inputs: tuple[str, ...] = ()  # columns left out of the model: all missing or constant


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One model version. ``sha256`` is the ``.onnx`` file's; the registry signs the encoded manifest."""

    format: int = MANIFEST_FORMAT
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    version: Annotated[int, msgspec.Meta(ge=1)]
    kind: ModelKind
    created_at: str  # ISO 8601 UTC
    feature_spec: FeatureSpec
    input_name: str
    input_dtype: Literal["float32", "float64"]
    output_name: str  # the ONNX output holding the raw score
    output_column: int = 0
    orientation: Literal[1, -1] = 1  # raw score = orientation * output: higher is more anomalous
    calibration: Calibration
    classes: tuple[str, ...] = ()  # the risk classifier's classes; the first is "normal"
    training: TrainingData
    metrics: dict[str, float] = {}
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    onnx_bytes: int
    key_id: str = ""  # which signing key (sha256 of its raw public key, first 16 hex digits)

    def __post_init__(self) -> None:
        if self.format != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {self.format} is not supported (expected {MANIFEST_FORMAT})")

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest's canonical bytes (the ones that are signed and stored)."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def decode_manifest(data: bytes) -> Manifest:
    return msgspec.json.decode(data, type=Manifest)
