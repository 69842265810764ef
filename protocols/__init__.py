"""The language every part of SmartGrid Sentinel speaks.

One reading type (:class:`Reading`), one quality model, the edge->hub sync contract
(:mod:`protocols.wire`), the firmware config loader (:mod:`protocols.config`), the grid-code
limit check (:mod:`protocols.gridcode`) and device drivers (:mod:`protocols.modbus`).
"""

from protocols.reading import Quality, QualityFlag, Reading, quality_class

__all__ = ["Quality", "QualityFlag", "Reading", "quality_class"]
