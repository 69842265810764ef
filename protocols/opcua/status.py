"""OPC-UA status codes -> our quality flags.

A status code is 32 bits (OPC 10000-4, 7.39): the top two bits are the severity (00 Good,
01 Uncertain, 10/11 Bad), bits 16-27 the sub-code, and for data values bits 10-11 say the info
bits are of type DataValue, in which case bits 8-9 are the limit bits (low, high, constant) and
bit 7 the overflow bit (a monitored item's queue dropped values; no flag of ours).

The mapping:

- Good: no flags (quality 1.0), except ``GoodLocalOverride`` (an operator forced the value:
  SUBSTITUTED, 0.5) and ``GoodClamped`` or a value at its low/high limit (OVERFLOW, 0.5);
- Uncertain: quality 0.5, with the flag that says why: last usable value -> STALE; substitute,
  initial, simulated or manual value -> SUBSTITUTED; engineering units / range exceeded -> OVERFLOW;
  any other uncertain code -> SUBSTITUTED (the value is not a trustworthy measurement);
- Bad: quality 0.0 and no value (NaN): lost communication with the data source (``BadNoCommunication``,
  ``BadNotConnected``, ``BadCommunicationError``, ``BadTimeout``, ``BadShutdown``, ...) -> COMM_LOST;
  a value out of range (``BadOutOfRange``, ``BadNumericOverflow``, ...) -> OVERFLOW | INVALID;
  anything else (``BadNodeIdUnknown``, ``BadSensorFailure``, ``BadTypeMismatch``, ...) -> INVALID.

Pure: no asyncua import, so the hub and the tests can use it without the driver's dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from protocols.reading import QualityFlag

__all__ = ["StatusQuality", "is_bad", "is_good", "is_uncertain", "status_name", "status_quality"]

SEVERITY_MASK = 0xC0000000
CODE_MASK = 0xFFFF0000  # severity + sub-code: what names a status
GOOD, UNCERTAIN = 0x00000000, 0x40000000
INFO_TYPE_DATA_VALUE = 0x00000400
LIMIT_MASK = 0x00000300
LIMIT_LOW, LIMIT_HIGH = 0x00000100, 0x00000200
OVERFLOW_BIT = 0x00000080

# Codes by name (values from OPC 10000-6 Annex A, StatusCode.csv); the few we treat specially.
_CODES: dict[str, int] = {
    # Good
    "Good": 0x00000000,
    "GoodLocalOverride": 0x00960000,
    "GoodClamped": 0x00300000,
    "GoodSubscriptionTransferred": 0x002D0000,
    # Uncertain
    "Uncertain": 0x40000000,
    "UncertainNoCommunicationLastUsableValue": 0x408F0000,
    "UncertainLastUsableValue": 0x40900000,
    "UncertainSubstituteValue": 0x40910000,
    "UncertainInitialValue": 0x40920000,
    "UncertainSensorNotAccurate": 0x40930000,
    "UncertainEngineeringUnitsExceeded": 0x40940000,
    "UncertainSubNormal": 0x40950000,
    "UncertainDataSubNormal": 0x40A40000,
    "UncertainOverRange": 0x40F20000,
    "UncertainUnderRange": 0x40F30000,
    "UncertainTransducerInManual": 0x42080000,
    "UncertainSimulatedValue": 0x42090000,
    "UncertainSensorCalibration": 0x420A0000,
    "UncertainConfigurationError": 0x420F0000,
    # Bad: communication
    "Bad": 0x80000000,
    "BadCommunicationError": 0x80050000,
    "BadTimeout": 0x800A0000,
    "BadShutdown": 0x800C0000,
    "BadServerNotConnected": 0x800D0000,
    "BadServerHalted": 0x800E0000,
    "BadNotConnected": 0x808A0000,
    "BadNoCommunication": 0x80310000,
    "BadWaitingForInitialData": 0x80320000,
    "BadConnectionRejected": 0x80AC0000,
    "BadDisconnect": 0x80AD0000,
    "BadConnectionClosed": 0x80AE0000,
    "BadSecureChannelClosed": 0x80860000,
    "BadSessionClosed": 0x80260000,
    "BadSessionIdInvalid": 0x80250000,
    "BadRequestTimeout": 0x80850000,
    "BadSubscriptionIdInvalid": 0x80280000,
    "BadNoSubscription": 0x80790000,
    # Bad: range
    "BadOutOfRange": 0x803C0000,
    "BadNumericOverflow": 0x81120000,
    "BadEdited_OutOfRange": 0x81190000,
    "BadInitialValue_OutOfRange": 0x811A0000,
    "BadOutOfRange_DominantValueChanged": 0x811B0000,
    "BadEdited_OutOfRange_DominantValueChanged": 0x811C0000,
    "BadOutOfRange_DominantValueChanged_DependentValueChanged": 0x811D0000,
    "BadEdited_OutOfRange_DominantValueChanged_DependentValueChanged": 0x811E0000,
    # Bad: the node or its value (INVALID, named here for messages)
    "BadNodeIdInvalid": 0x80330000,
    "BadNodeIdUnknown": 0x80340000,
    "BadAttributeIdInvalid": 0x80350000,
    "BadNotReadable": 0x803A0000,
    "BadUserAccessDenied": 0x801F0000,
    "BadTypeMismatch": 0x80740000,
    "BadNoMatch": 0x806F0000,
    "BadBrowseNameInvalid": 0x80600000,
    "BadConfigurationError": 0x80890000,
    "BadNotFound": 0x803E0000,
    "BadDeviceFailure": 0x808B0000,
    "BadSensorFailure": 0x808C0000,
    "BadOutOfService": 0x808D0000,
}

_NAMES: dict[int, str] = {v: k for k, v in _CODES.items()}

_COMM_LOST = frozenset(_CODES[n] for n in (
    "BadCommunicationError", "BadTimeout", "BadShutdown", "BadServerNotConnected", "BadServerHalted",
    "BadNotConnected", "BadNoCommunication", "BadWaitingForInitialData", "BadConnectionRejected",
    "BadDisconnect", "BadConnectionClosed", "BadSecureChannelClosed", "BadSessionClosed",
    "BadSessionIdInvalid", "BadRequestTimeout",
))
_OUT_OF_RANGE = frozenset(_CODES[n] for n in (
    "BadOutOfRange", "BadNumericOverflow", "BadEdited_OutOfRange", "BadInitialValue_OutOfRange",
    "BadOutOfRange_DominantValueChanged", "BadEdited_OutOfRange_DominantValueChanged",
    "BadOutOfRange_DominantValueChanged_DependentValueChanged",
    "BadEdited_OutOfRange_DominantValueChanged_DependentValueChanged",
))
_STALE = frozenset(_CODES[n] for n in ("UncertainNoCommunicationLastUsableValue", "UncertainLastUsableValue"))
_UNCERTAIN_RANGE = frozenset(_CODES[n] for n in (
    "UncertainEngineeringUnitsExceeded", "UncertainOverRange", "UncertainUnderRange",
))


@dataclass(frozen=True, slots=True)
class StatusQuality:
    """What a status code means for a reading."""

    flags: int  # QualityFlag bits
    quality: float  # 1.0 good, 0.5 uncertain, 0.0 bad
    usable: bool  # False: drop the value (NaN); Bad codes carry no trustworthy value
    name: str  # e.g. "BadNodeIdUnknown", "Good"


def is_good(code: int) -> bool:
    return code & SEVERITY_MASK == GOOD


def is_uncertain(code: int) -> bool:
    return code & SEVERITY_MASK == UNCERTAIN


def is_bad(code: int) -> bool:
    return bool(code & 0x80000000)


def status_name(code: int) -> str:
    """A readable name: ``BadNodeIdUnknown``, or ``Bad (0x80AB0000)`` for a code we do not name."""
    code = int(code) & 0xFFFFFFFF
    name = _NAMES.get(code & CODE_MASK)
    if name is None:
        try:  # the full table, when the driver's library is installed
            from asyncua.ua.status_codes import get_name_and_doc

            name, _ = get_name_and_doc(code & CODE_MASK)
        except Exception:  # noqa: BLE001 - unknown codes and a missing asyncua alike
            name = None
        generic = name in ("Good", "Uncertain", "Bad")  # asyncua's answer for a code it does not know
        if not name or name.startswith("UnknownUaError") or generic:
            sev = "Good" if is_good(code) else "Uncertain" if is_uncertain(code) else "Bad"
            name = f"{sev} (0x{code & CODE_MASK:08X})"
    return name


@lru_cache(maxsize=512)
def status_quality(code: int) -> StatusQuality:
    """Map a status code (an int; pass ``StatusCode.value``) onto flags and quality."""
    code = int(code) & 0xFFFFFFFF
    sub = code & CODE_MASK
    name = status_name(code)
    limit_bits = code & LIMIT_MASK if code & INFO_TYPE_DATA_VALUE else 0
    at_limit = limit_bits in (LIMIT_LOW, LIMIT_HIGH)
    # The overflow info bit (OVERFLOW_BIT) says a monitored item's queue dropped values, not that
    # this value overflowed: it makes the value no worse, so it sets no flag.
    if is_bad(code):
        if sub in _COMM_LOST:
            return StatusQuality(int(QualityFlag.COMM_LOST), 0.0, False, name)
        if sub in _OUT_OF_RANGE:
            return StatusQuality(int(QualityFlag.OVERFLOW | QualityFlag.INVALID), 0.0, False, name)
        return StatusQuality(int(QualityFlag.INVALID), 0.0, False, name)
    if is_uncertain(code):
        if sub in _STALE:
            flags = QualityFlag.STALE
        elif sub in _UNCERTAIN_RANGE or at_limit:
            flags = QualityFlag.OVERFLOW
        else:
            flags = QualityFlag.SUBSTITUTED
        return StatusQuality(int(flags), 0.5, True, name)
    if sub == _CODES["GoodLocalOverride"]:
        return StatusQuality(int(QualityFlag.SUBSTITUTED), 0.5, True, name)
    if sub == _CODES["GoodClamped"] or at_limit:
        return StatusQuality(int(QualityFlag.OVERFLOW), 0.5, True, name)
    return StatusQuality(0, 1.0, True, name)
