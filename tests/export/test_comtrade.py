"""COMTRADE records written by export/ and read back by an independent reader (the ``comtrade``
package on PyPI): the same channels, units, values (within the scaling's resolution) and
timestamps, in ASCII, 16-bit binary and binary32, as .cfg + .dat and as one .cff; gaps, readings
without a value and irregular instants included."""

from __future__ import annotations

import math
import struct
import tempfile
import zipfile
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import comtrade
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export.comtrade import FORMATS, ComtradeError, ComtradeRecord, to_comtrade
from protocols.reading import QualityFlag, Reading

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
STATION = "NAIROBI-S1"


def _r(seconds: float, device: str, metric: str, value: float | None, unit: str = "kV", flags: int = 0) -> Reading:
    return Reading(ts=T0 + timedelta(seconds=seconds), substation=STATION, device_id=device, metric=metric,
                   value=value, unit=unit, flags=flags)


def _load(record: ComtradeRecord, directory: Path, cff: bool = False) -> comtrade.Comtrade:
    """Read the record back as files on disk, as a tool opens them."""
    if cff:
        path = directory / f"{record.name}.cff"
        path.write_bytes(record.cff())
    else:
        record.write(directory)
        path = directory / f"{record.name}.cfg"
    return comtrade.Comtrade(use_double_precision=True).load(str(path))


def _times(rec: comtrade.Comtrade) -> list[datetime]:
    start = rec.start_timestamp.replace(tzinfo=UTC)
    return [start + timedelta(microseconds=round(t * 1e6)) for t in rec.time]


def _tolerance(record: ComtradeRecord, channel: int, value: float) -> float:
    return record.channels[channel].a / 2 + 1e-9 * max(1.0, abs(value))


def _handmade() -> list[Reading]:
    """A feeder polled every second (one poll missed at 4 s, one answered with nothing at 6 s, one
    value flagged invalid at 7 s), and a transformer's oil temperature at its own irregular instants."""
    out = []
    for i in range(10):
        if i == 4:
            continue
        out.append(_r(i, "FEEDER-F12", "voltage_l1", None if i == 6 else round(11.0 + 0.01 * i, 2),
                      flags=QualityFlag.COMM_LOST if i == 6 else 0))
        out.append(_r(i, "FEEDER-F12", "current_l3", -5000.0 if i == 7 else 100.0 + math.sin(i) * 37.123456789,
                      unit="A", flags=QualityFlag.INVALID if i == 7 else 0))
    out += [_r(0.25, "TR-01", "oil_temperature", 65.5, unit="degC"),
            _r(3.731, "TR-01", "oil_temperature", 66.25, unit="degC"),
            _r(8.000123, "TR-01", "oil_temperature", 67.0, unit="degC")]
    return out


@pytest.mark.parametrize("cff", [False, True], ids=["cfg+dat", "cff"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_handmade_record_reads_back_the_same(fmt: str, cff: bool, tmp_path: Path) -> None:
    readings = _handmade()
    trigger = T0 + timedelta(seconds=3)
    record = to_comtrade(readings, trigger=trigger, fmt=fmt, notes=["Incident INC-2026-000042: voltage_sag"])
    rec = _load(record, tmp_path, cff=cff)

    assert (rec.station_name, rec.rec_dev_id, rec.rev_year, rec.ft) == (STATION, "SmartGrid Sentinel", "2013",
                                                                        fmt.upper())
    assert rec.analog_channel_ids == ["FEEDER-F12 current_l3", "FEEDER-F12 voltage_l1", "TR-01 oil_temperature"]
    assert [c.uu for c in rec.cfg.analog_channels] == ["A", "kV", "degC"]
    assert rec.analog_phases == ["C", "A", ""]
    assert [c.ccbm for c in rec.cfg.analog_channels] == ["FEEDER-F12", "FEEDER-F12", "TR-01"]
    assert rec.status_count == 0 and rec.frequency == 50
    assert rec.start_timestamp.replace(tzinfo=UTC) == T0
    assert rec.trigger_timestamp.replace(tzinfo=UTC) == trigger
    assert "INC-2026-000042" in rec.hdr and "oil_temperature" in rec.hdr

    # one sample per distinct instant: the feeder's 9 polls and the transformer's 2 off-second readings
    instants = sorted({r.ts for r in readings})
    assert _times(rec) == instants == list(record.times)
    by_instant = {t: i for i, t in enumerate(instants)}
    expected: list[list[float | None]] = [[None] * len(instants) for _ in range(3)]
    channel = {("FEEDER-F12", "current_l3"): 0, ("FEEDER-F12", "voltage_l1"): 1, ("TR-01", "oil_temperature"): 2}
    for r in readings:
        usable = r.value is not None and not r.flags
        expected[channel[(r.device_id, r.metric)]][by_instant[r.ts]] = r.value if usable else None
    for ch in range(3):
        for i, want in enumerate(expected[ch]):
            got = rec.analog[ch][i]
            if want is None:
                assert math.isnan(got), (ch, i, got)
            else:
                assert abs(got - want) <= _tolerance(record, ch, want), (ch, i, got, want)
    # values that are multiples of 0.01 (and 0.25 ...) come back exactly, whatever the format
    assert [rec.analog[1][by_instant[T0 + timedelta(seconds=s)]] for s in (0, 5, 9)] == pytest.approx(
        [11.0, 11.05, 11.09], abs=1e-12)
    assert record.channels[1].a == pytest.approx(0.01) and record.channels[2].a == pytest.approx(0.01)
    c3 = record.channels[0]
    assert (c3.readings, c3.missing) == (9, 1) and record.channels[1].missing == 1


def test_instants_not_evenly_spaced_make_timestamps_critical(tmp_path: Path) -> None:
    record = to_comtrade(_handmade(), trigger=T0)
    rec = _load(record, tmp_path)
    assert record.nrates == 0 and rec.cfg.timestamp_critical  # nrates 0: the .dat's timestamps are the time
    assert rec.cfg.sample_rates == [[0.0, len(record.times)]]


def test_regular_polling_with_a_gap_gives_one_rate_per_stretch(tmp_path: Path) -> None:
    readings = [_r(s, "FEEDER-F12", "voltage_l1", 11.0) for s in [*range(0, 5), *range(10, 15)]]
    readings += [_r(14 + 0.5 * k, "FEEDER-F12", "voltage_l1", 11.5) for k in range(1, 5)]  # then twice a second
    record = to_comtrade(readings, trigger=T0)
    rec = _load(record, tmp_path)
    # 1 Hz to sample 5; the gap (one 6 s interval) to sample 6; 1 Hz to sample 10; 2 Hz to sample 14
    assert rec.cfg.nrates == 4 and not rec.cfg.timestamp_critical
    assert rec.cfg.sample_rates == [[1.0, 5], [pytest.approx(1 / 6), 6], [1.0, 10], [2.0, 14]]
    assert _times(rec) == [r.ts for r in readings]  # the reader computed them from the rates
    # the .dat carries the same instants as timestamps (microseconds), for tools that read those
    assert [int(line.split(",")[1]) for line in to_comtrade(readings, trigger=T0, fmt="ascii").dat.decode().split()
            ] == [(r.ts - T0) // timedelta(microseconds=1) for r in readings]


def test_missing_values_are_the_standards_codes() -> None:
    readings = [_r(0, "D", "a", 1.0), _r(0, "D", "b", None), _r(1, "D", "a", None), _r(1, "D", "b", 2.0)]
    ascii_rows = to_comtrade(readings, trigger=T0, fmt="ascii").dat.decode().split("\r\n")
    assert ascii_rows[:2] == ["1,0,0,99999", "2,1000000,99999,0"]
    binary = to_comtrade(readings, trigger=T0, fmt="binary").dat
    assert struct.unpack("<IIhhIIhh", binary) == (1, 0, 0, -32768, 2, 1_000_000, -32768, 0)
    binary32 = to_comtrade(readings, trigger=T0, fmt="binary32").dat
    assert struct.unpack("<IIiiIIii", binary32) == (1, 0, 0, -2**31, 2, 1_000_000, -2**31, 0)


def test_scaling_uses_the_whole_16_bit_range_for_values_that_are_not_decimals(tmp_path: Path) -> None:
    values = [230.0 + 0.1 * math.sqrt(k) + 1e-7 * k for k in range(50)]
    readings = [_r(k, "TR-01", "voltage_l1", v) for k, v in enumerate(values)]
    record = to_comtrade(readings, trigger=T0, fmt="binary")
    ch = record.channels[0]
    assert ch.a == pytest.approx((max(values) - min(values)) / (2 * 32767))
    cfg = record.cfg.decode().split("\r\n")[2].split(",")
    assert (cfg[8], cfg[9]) == ("-32767", "32767")  # min and max codes: the range is used
    rec = _load(record, tmp_path)
    assert all(abs(got - want) <= ch.a / 2 + 1e-12 for got, want in zip(rec.analog[0], values, strict=True))


def test_align_puts_readings_of_devices_polled_ms_apart_in_one_sample(tmp_path: Path) -> None:
    readings = [r for k in range(5) for r in (_r(k, "FEEDER-F12", "voltage_l1", 11.0 + k),
                                              _r(k + 0.02, "FEEDER-F13", "voltage_l1", 12.0 + k))]
    exact = to_comtrade(readings, trigger=T0)
    assert len(exact.times) == 10 and exact.channels[0].readings == 5
    aligned = to_comtrade(readings, trigger=T0, align_s=0.05)
    rec = _load(aligned, tmp_path)
    assert _times(rec) == [T0 + timedelta(seconds=k) for k in range(5)]  # the first reading's instant
    assert list(rec.analog[0]) == [11.0 + k for k in range(5)] and list(rec.analog[1]) == [12.0 + k for k in range(5)]
    assert rec.cfg.sample_rates == [[1.0, 5]]
    assert "within 0.05 s sharing a sample" in rec.hdr


def test_a_long_window_counts_time_in_larger_steps(tmp_path: Path) -> None:
    # 3 hours do not fit 2^32 microseconds: the timestamps count 5 us (timemult 5)
    readings = [_r(s, "TR-01", "oil_temperature", 60.0 + s / 1000, unit="degC") for s in (0, 1.000_003, 10_800)]
    record = to_comtrade(readings, trigger=T0)
    assert record.time_multiplier == 5
    rec = _load(record, tmp_path)
    assert rec.cfg.timemult == 5
    for got, r in zip(_times(rec), readings, strict=True):
        assert abs(got - r.ts) <= timedelta(microseconds=3)


def test_line_frequency_from_a_frequency_channel(tmp_path: Path) -> None:
    readings = [_r(k, "FEEDER-F12", "frequency", 59.98 + k / 100, unit="Hz") for k in range(4)]
    assert _load(to_comtrade(readings, trigger=T0), tmp_path).frequency == 60


def test_the_zip_holds_cfg_dat_and_hdr() -> None:
    record = to_comtrade(_handmade(), trigger=T0, name="INC-2026-000042_NAIROBI-S1")
    with zipfile.ZipFile(BytesIO(record.zip())) as z:
        assert sorted(z.namelist()) == ["INC-2026-000042_NAIROBI-S1.cfg", "INC-2026-000042_NAIROBI-S1.dat",
                                        "INC-2026-000042_NAIROBI-S1.hdr"]
        assert z.read("INC-2026-000042_NAIROBI-S1.dat") == record.dat


def test_what_makes_no_record_is_refused_with_the_reason() -> None:
    with pytest.raises(ComtradeError, match="no readings"):
        to_comtrade([], trigger=T0)
    other = Reading(ts=T0, substation="MOMBASA-S1", device_id="X", metric="frequency", value=50.0)
    with pytest.raises(ComtradeError, match="MOMBASA-S1, NAIROBI-S1"):
        to_comtrade([_r(0, "X", "frequency", 50.0), other], trigger=T0)
    with pytest.raises(ComtradeError, match="FEEDER-F12 voltage_l1 is in several units.*V, kV"):
        to_comtrade([_r(0, "FEEDER-F12", "voltage_l1", 11.0), _r(1, "FEEDER-F12", "voltage_l1", 11000.0, unit="V")],
                    trigger=T0)
    with pytest.raises(ComtradeError, match="format"):
        to_comtrade(_handmade(), trigger=T0, fmt="float64")
    with pytest.raises(ComtradeError, match="trigger"):
        to_comtrade(_handmade(), trigger=datetime(2026, 3, 1))


# -- properties --------------------------------------------------------------------------------------

_values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-1_000_000, max_value=1_000_000).map(lambda n: n / 100),  # decimals, as devices send
    st.none(),
)


@st.composite
def _series(draw: st.DrawFn) -> list[Reading]:
    """1 to 4 channels, each with its own irregular instants (at least 1 ms apart) over up to 3 h."""
    out = []
    span_us = draw(st.sampled_from([2_000_000, 600_000_000, 10_800_000_000]))
    for ch in range(draw(st.integers(1, 4))):
        offsets = draw(st.lists(st.integers(0, span_us // 1000), min_size=1, max_size=25, unique=True))
        for ms in offsets:
            jitter_us = draw(st.integers(0, 999))
            out.append(Reading(ts=T0 + timedelta(microseconds=ms * 1000 + jitter_us), substation=STATION,
                               device_id=f"DEV-{ch % 2}", metric=f"metric_l{ch + 1}", value=draw(_values),
                               unit=("kV", "A", "Hz", "")[ch]))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readings=_series(), fmt=st.sampled_from(FORMATS), cff=st.booleans())
def test_any_readings_read_back_at_their_instants_with_their_values(readings: list[Reading], fmt: str,
                                                                    cff: bool) -> None:
    record = to_comtrade(readings, trigger=T0, fmt=fmt)
    with tempfile.TemporaryDirectory() as d:
        rec = _load(record, Path(d), cff=cff)
    keys = sorted({(r.device_id, r.metric) for r in readings})
    assert rec.analog_channel_ids == [f"{d} {m}" for d, m in keys]
    assert [c.uu for c in rec.cfg.analog_channels] == [
        next(r.unit for r in readings if (r.device_id, r.metric) == k) or "-" for k in keys]
    times = _times(rec)
    step = timedelta(microseconds=record.time_multiplier)
    assert times == list(record.times) and times == sorted(set(times))
    for ch, key in enumerate(keys):
        mine = [r for r in readings if (r.device_id, r.metric) == key]
        for r in mine:  # each reading is at the sample nearest its instant, with its value
            i = min(range(len(times)), key=lambda k: abs(times[k] - r.ts))
            assert abs(times[i] - r.ts) <= step / 2, (r.ts, times[i])
            got = rec.analog[ch][i]
            if r.value is None:
                assert math.isnan(got)
            else:
                assert abs(got - r.value) <= _tolerance(record, ch, r.value), (got, r.value, record.channels[ch])
        # and nothing else: the channel is missing at every other sample
        assert sum(not math.isnan(v) for v in rec.analog[ch]) == sum(r.value is not None for r in mine)
