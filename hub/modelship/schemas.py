"""What the model registry routes take and answer (:mod:`hub.modelship.routes`)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocols.reading import UtcTime
from protocols.validation import NAME_PATTERN

__all__ = ["ModelInfo", "ModelList", "ModelVersion", "RetrainIncident", "RetrainRequest", "RetrainResult"]


class ModelInfo(msgspec.Struct, frozen=True):
    name: str
    versions: list[int]
    latest: int | None


class ModelList(msgspec.Struct, frozen=True):
    models: list[ModelInfo]


class ModelVersion(msgspec.Struct, frozen=True):
    name: str
    version: int


ModelName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, max_length=64)]  # it becomes a directory
Text = Annotated[str, msgspec.Meta(max_length=128)]


class RetrainIncident(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An expert's verdict: on a stored incident (``incident_id``), or on an interval of a device."""

    label: Text  # "normal" (a false alarm) or the anomaly's type: step, drift, spike, ...
    incident_id: Text | None = None
    device_id: Text | None = None
    metric: Text | None = None
    start: UtcTime | None = None
    end: UtcTime | None = None


class RetrainRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    method: Literal["feedback", "from_database"]
    incidents: Annotated[list[RetrainIncident], msgspec.Meta(max_length=10_000)] = []
    # default: grid-risk (feedback), grid-anomaly (from_database); protocols.validation.NAME_PATTERN
    model: ModelName | None = None
    # the model's inputs; default: the previous version's, or the incidents'
    metrics: Annotated[list[Text], msgspec.Meta(max_length=64)] | None = None
    window: Annotated[int, msgspec.Meta(ge=4, le=4096)] = 32  # what models.features.FeatureSpec allows
    sample_period_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 1.0


class RetrainResult(msgspec.Struct, frozen=True, kw_only=True):
    """The seed's answer to ``POST /retrain``, plus what was trained."""

    success: bool
    model_version: int
    accuracy_improvement: float | None  # held-out accuracy, new minus previous version; None: no previous
    retraining_time_ms: float
    model: str
    kind: str
    accuracy: float
    previous_accuracy: float | None
    holdout_windows: int
