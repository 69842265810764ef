"""OPC-UA status codes map onto our quality flags and the 0..1 quality."""

from __future__ import annotations

import pytest
from asyncua.ua import StatusCodes

from protocols.opcua.status import status_name, status_quality
from protocols.reading import Quality, QualityFlag, quality_class

F = QualityFlag


@pytest.mark.parametrize(
    ("code", "flags", "quality", "usable"),
    [
        (StatusCodes.Good, 0, 1.0, True),
        (StatusCodes.GoodLocalOverride, F.SUBSTITUTED, 0.5, True),
        (StatusCodes.GoodClamped, F.OVERFLOW, 0.5, True),
        (StatusCodes.Good | 0x400 | 0x200, F.OVERFLOW, 0.5, True),  # info type DataValue, limit high
        (StatusCodes.Good | 0x400 | 0x080, 0, 1.0, True),  # queue overflow bit: no worse a value
        (StatusCodes.Uncertain, F.SUBSTITUTED, 0.5, True),
        (StatusCodes.UncertainLastUsableValue, F.STALE, 0.5, True),
        (StatusCodes.UncertainNoCommunicationLastUsableValue, F.STALE, 0.5, True),
        (StatusCodes.UncertainSubstituteValue, F.SUBSTITUTED, 0.5, True),
        (StatusCodes.UncertainInitialValue, F.SUBSTITUTED, 0.5, True),
        (StatusCodes.UncertainSimulatedValue, F.SUBSTITUTED, 0.5, True),
        (StatusCodes.UncertainSensorNotAccurate, F.SUBSTITUTED, 0.5, True),
        (StatusCodes.UncertainEngineeringUnitsExceeded, F.OVERFLOW, 0.5, True),
        (StatusCodes.UncertainOverRange, F.OVERFLOW, 0.5, True),
        (StatusCodes.BadCommunicationError, F.COMM_LOST, 0.0, False),
        (StatusCodes.BadNotConnected, F.COMM_LOST, 0.0, False),
        (StatusCodes.BadNoCommunication, F.COMM_LOST, 0.0, False),
        (StatusCodes.BadWaitingForInitialData, F.COMM_LOST, 0.0, False),
        (StatusCodes.BadTimeout, F.COMM_LOST, 0.0, False),
        (StatusCodes.BadShutdown, F.COMM_LOST, 0.0, False),
        (StatusCodes.BadNodeIdUnknown, F.INVALID, 0.0, False),
        (StatusCodes.BadNodeIdInvalid, F.INVALID, 0.0, False),
        (StatusCodes.BadTypeMismatch, F.INVALID, 0.0, False),
        (StatusCodes.BadSensorFailure, F.INVALID, 0.0, False),
        (StatusCodes.BadDeviceFailure, F.INVALID, 0.0, False),
        (StatusCodes.BadUserAccessDenied, F.INVALID, 0.0, False),
        (StatusCodes.BadOutOfRange, F.OVERFLOW | F.INVALID, 0.0, False),
        (StatusCodes.BadNumericOverflow, F.OVERFLOW | F.INVALID, 0.0, False),
        (0x80AB0000, F.INVALID, 0.0, False),  # a Bad code nobody named: still bad
        (0xC0000000, F.INVALID, 0.0, False),  # severity 11 is Bad too
    ],
)
def test_status_code_maps_to_flags_and_quality(code: int, flags: int, quality: float, usable: bool) -> None:
    sq = status_quality(code)
    assert (sq.flags, sq.quality, sq.usable) == (int(flags), quality, usable), sq.name


def test_the_edge_classifies_each_mapping_as_opc_ua_does() -> None:
    """good / uncertain / bad as the daemon derives them from flags agree with the OPC-UA severity."""
    for code, expected in [(StatusCodes.Good, Quality.GOOD), (StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN),
                           (StatusCodes.GoodLocalOverride, Quality.UNCERTAIN),
                           (StatusCodes.BadNoCommunication, Quality.BAD), (StatusCodes.BadNodeIdUnknown, Quality.BAD),
                           (StatusCodes.BadOutOfRange, Quality.BAD)]:
        sq = status_quality(code)
        assert quality_class(sq.quality, sq.flags) is expected, sq.name


def test_status_names_are_readable() -> None:
    assert status_name(StatusCodes.BadNodeIdUnknown) == "BadNodeIdUnknown"
    assert status_name(StatusCodes.Good) == "Good"
    assert status_name(StatusCodes.BadSensorFailure | 0x400) == "BadSensorFailure"  # info bits ignored
    assert status_name(0x81FF0000) == "Bad (0x81FF0000)"
