"""COMTRADE records (IEEE C37.111-2013 / IEC 60255-24:2013) of readings, for protection engineers'
tools (SIGRA, PQDiffractor, Wavewin): a ``.cfg`` and a ``.dat`` (ASCII, 16-bit BINARY or
BINARY32), a ``.hdr`` saying where the record came from, or all of them in one ``.cff``.

:func:`to_comtrade` takes the readings of one substation (one or more devices) and makes one
analog channel per (device, metric): ``FEEDER-F12 voltage_l1``, its phase from the metric
(``_l1``/``_l2``/``_l3``/``_n`` -> A/B/C/N), the device as the monitored component (ccbm), the
reading's unit, and values as primary quantities (primary = secondary = 1, ``P``).

**Time base: the readings' own instants.** Readings are irregular (a poll a few ms late, a device
that stopped answering), per device and per metric. Each distinct instant (to the file's time
resolution) is a sample, and a channel without a reading at an instant has the standard's
missing-value code there (ASCII ``99999``, BINARY ``0x8000``, BINARY32 ``0x80000000``). The
timestamps are always written in the ``.dat``. Where the instants are evenly spaced in at most
:data:`MAX_RATES` stretches of on average :data:`MIN_STRETCH` intervals or more (regular polling,
a gap or two), the ``.cfg`` also gives one sample rate per stretch (``nrates`` >= 1), for tools
that compute time from rates; otherwise ``nrates`` is 0 and the timestamps are critical, as
C37.111 allows. Either way a reader gets each reading at
its own time: nothing is shifted onto a grid, interpolated or held. ``align_s`` trades that
exactness for denser records when devices are polled a few ms apart: readings of *different*
channels within ``align_s`` of a sample's first reading share that sample (and its time).

**Scaling** (value = a * code + b) is chosen per channel from its values: when they are all
multiples of 10^-k (0.01 kV, 1 A) and their span fits the format's integer range, a = 10^-k and the
values are exact; otherwise a and b spread the channel's span over the whole range (16-bit:
+-32767, ASCII: +-99998, BINARY32: +-2147483647), a resolution of a / 2 at worst.

A reading without a value, not finite, or flagged INVALID, COMM_LOST or SUBSTITUTED is missing
(as the detectors treat it): the instant stays, the value is the missing code. The ``.cfg`` is
UTF-8 with CR/LF, times are UTC (``time_code,local_code`` = ``0,0``); ``tmq_code`` is ``F`` (clock
not reliable) when a reading is flagged CLOCK_UNSYNC, else ``A`` (within 1 s of UTC, what a
polled device stamped by an NTP-disciplined edge can promise); ``leapsec`` is 3 (the time source
cannot represent leap seconds).
"""

from __future__ import annotations

import io
import math
import re
import statistics
import struct
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from protocols.reading import QualityFlag, Reading

__all__ = ["FORMATS", "MAX_RATES", "Channel", "ComtradeError", "ComtradeRecord", "cff_bytes", "to_comtrade"]

FORMATS = ("ascii", "binary", "binary32")
MAX_RATES = 32  # more stretches of even spacing than this: nrates = 0, timestamps critical
MIN_STRETCH = 3  # nor when the stretches are on average shorter than this many intervals
REV_YEAR = "2013"

_FT = {"ascii": "ASCII", "binary": "BINARY", "binary32": "BINARY32"}
_CODE_MAX = {"ascii": 99_998, "binary": 32_767, "binary32": 2_147_483_647}  # symmetric ranges
_MISSING = {"ascii": 99_999, "binary": -32_768, "binary32": -2_147_483_648}
_PACK = {"binary": "h", "binary32": "i"}
_TS_MAX = 0xFFFF_FFFE  # the 4-byte timestamp; 0xFFFFFFFF means "missing"
_UNUSABLE = QualityFlag.INVALID | QualityFlag.COMM_LOST | QualityFlag.SUBSTITUTED
_PHASES = {"l1": "A", "l2": "B", "l3": "C", "n": "N", "l12": "AB", "l23": "BC", "l31": "CA"}
_US = timedelta(microseconds=1)
# field widths of C37.111-2013's .cfg
_MAX_STATION, _MAX_CH_ID, _MAX_CCBM, _MAX_UNIT = 64, 128, 64, 32


class ComtradeError(ValueError):
    """Readings that make no COMTRADE record (none, of several substations, a channel in two units),
    or a bad argument. ``field``: the argument, or what of the readings, at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Channel:
    """One analog channel as written: value = a * code + b."""

    number: int  # 1-based, as in the .cfg
    device_id: str
    metric: str
    ch_id: str
    ph: str
    unit: str
    a: float
    b: float
    readings: int  # readings of this channel in the record
    missing: int  # of them, without a usable value (written as the missing code)
    dropped: int  # readings at an instant the channel already had a value for (after rounding)


@dataclass(frozen=True, slots=True)
class ComtradeRecord:
    """A record made by :func:`to_comtrade`: the files' bytes and what they hold."""

    name: str  # the files' base name
    format: str  # ascii | binary | binary32
    cfg: bytes
    dat: bytes
    hdr: bytes
    station: str
    channels: tuple[Channel, ...]
    start: datetime  # the first sample's time (UTC)
    trigger: datetime
    times: tuple[datetime, ...]  # each sample's time, as written
    nrates: int  # 0: timestamps are critical
    time_multiplier: int  # the .dat's timestamps count this many microseconds

    def files(self) -> dict[str, bytes]:
        """``NAME.cfg``, ``NAME.dat``, ``NAME.hdr``."""
        return {f"{self.name}.cfg": self.cfg, f"{self.name}.dat": self.dat, f"{self.name}.hdr": self.hdr}

    def cff(self) -> bytes:
        """The record as one ``.cff`` file (C37.111-2013's combined format)."""
        return cff_bytes(self.cfg, self.dat, self.format, hdr=self.hdr)

    def zip(self) -> bytes:
        """The ``.cfg``, ``.dat`` and ``.hdr`` in a zip archive."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in self.files().items():
                z.writestr(zipfile.ZipInfo(name, date_time=self.start.timetuple()[:6]), data,
                           compress_type=zipfile.ZIP_DEFLATED)
        return buf.getvalue()

    def write(self, directory: str | Path) -> list[Path]:
        """Write the ``.cfg``, ``.dat`` and ``.hdr`` into ``directory`` (made if need be)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for name, data in self.files().items():
            (d / name).write_bytes(data)
            out.append(d / name)
        return out


def cff_bytes(cfg: bytes, dat: bytes, fmt: str, hdr: bytes = b"", inf: bytes = b"") -> bytes:
    """A ``.cff``: the CFG, INF, HDR and DAT sections, each under its ``--- file type: ... ---`` line
    (a binary DAT's line gives its byte count)."""
    if fmt not in _FT:
        raise ComtradeError("fmt", f"format: {fmt!r} is not one of {', '.join(FORMATS)}")

    def text(b: bytes) -> bytes:
        return b if not b or b.endswith(b"\r\n") else b + b"\r\n"

    dat_head = "DAT ASCII" if fmt == "ascii" else f"DAT {_FT[fmt]}: {len(dat)}"
    return (b"--- file type: CFG ---\r\n" + text(cfg) + b"--- file type: INF ---\r\n" + text(inf)
            + b"--- file type: HDR ---\r\n" + text(hdr) + f"--- file type: {dat_head} ---\r\n".encode() + dat)


def to_comtrade(
    readings: Iterable[Reading],
    *,
    trigger: datetime,
    fmt: str = "binary",
    name: str | None = None,
    rec_dev_id: str | None = None,
    line_frequency_hz: float | None = None,
    align_s: float = 0.0,
    notes: Sequence[str] = (),
) -> ComtradeRecord:
    """A COMTRADE record of ``readings`` (one substation; any devices and metrics, any order).

    ``trigger``: the trigger time (an incident's first finding, or the window's start).
    ``fmt``: ``ascii``, ``binary`` (16-bit) or ``binary32``. ``name``: the files' base name
    (default ``STATION_YYYYMMDDTHHMMSSZ`` of the first sample). ``rec_dev_id``: default the device,
    or ``SmartGrid Sentinel`` for several. ``line_frequency_hz``: default from a ``frequency``
    channel (50 or 60, the nearer), else 50. ``align_s``: see the module's docstring. ``notes``:
    lines for the ``.hdr`` (what the record is of: an incident, who asked)."""
    if fmt not in _FT:
        raise ComtradeError("fmt", f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if trigger.tzinfo is None:
        raise ComtradeError("trigger", "trigger: a time zone is required (UTC)")
    if not (math.isfinite(align_s) and align_s >= 0):
        raise ComtradeError("align_s", f"align_s: {align_s!r} is not a number of seconds >= 0")
    trigger = trigger.astimezone(UTC)
    readings = sorted(readings, key=lambda r: r.ts)
    if not readings:
        raise ComtradeError("readings", "no readings to export")
    stations = sorted({r.substation for r in readings})
    if len(stations) > 1:
        raise ComtradeError("substation",
                            f"readings of several substations ({', '.join(stations)}); a record is of one")
    station = stations[0]

    keys = sorted({(r.device_id, r.metric) for r in readings})
    index = {k: i for i, k in enumerate(keys)}
    units: list[set[str]] = [set() for _ in keys]
    for r in readings:
        units[index[(r.device_id, r.metric)]].add(r.unit)
    for (device, metric), seen in zip(keys, units, strict=True):
        if len(seen) > 1:
            raise ComtradeError("unit", f"{device} {metric} is in several units in this window "
                                f"({', '.join(sorted(seen))}); export a window with one")

    t0 = readings[0].ts.astimezone(UTC)
    span_us = (readings[-1].ts - t0) // _US
    timemult = _time_multiplier(span_us)
    align_q = int(align_s * 1_000_000) // timemult

    # samples: (instant, {channel: value or None})
    samples: list[tuple[int, dict[int, float | None]]] = []
    counts = [0] * len(keys)
    missing = [0] * len(keys)
    dropped = [0] * len(keys)
    unsynced = False
    entries = sorted(((((r.ts - t0) // _US + timemult // 2) // timemult, index[(r.device_id, r.metric)], r)
                      for r in readings), key=lambda e: (e[0], e[1]))
    for q, ch, r in entries:
        unsynced = unsynced or bool(r.flags & QualityFlag.CLOCK_UNSYNC)
        value = _usable(r)
        if samples:
            at, row = samples[-1]
            if ch in row and q == at:
                dropped[ch] += 1
                continue
            if ch not in row and q - at <= align_q:
                row[ch] = value
                counts[ch] += 1
                missing[ch] += value is None
                continue
        samples.append((q, {ch: value}))
        counts[ch] += 1
        missing[ch] += value is None

    fmt_max, fmt_missing = _CODE_MAX[fmt], _MISSING[fmt]
    scales = [_scale([row[ch] for _, row in samples if row.get(ch) is not None], fmt_max)  # type: ignore[misc]
              for ch in range(len(keys))]
    codes: list[list[int]] = []
    mins, maxs = [0] * len(keys), [0] * len(keys)
    first = [True] * len(keys)
    for _, row in samples:
        line = []
        for ch, (a, b, decimals) in enumerate(scales):
            v = row.get(ch)
            if v is None:
                line.append(fmt_missing)
                continue
            x = _code(v, a, b, decimals, fmt_max)
            if first[ch]:
                mins[ch] = maxs[ch] = x
                first[ch] = False
            else:
                mins[ch], maxs[ch] = min(mins[ch], x), max(maxs[ch], x)
            line.append(x)
        codes.append(line)

    instants = [q for q, _ in samples]
    rates = _rates(instants, timemult)
    channels = tuple(
        Channel(number=i + 1, device_id=device, metric=metric, ch_id=_field(f"{device} {metric}", _MAX_CH_ID),
                ph=_PHASES.get(metric.rpartition("_")[2], "") if "_" in metric else "",
                unit=_field(next(iter(units[i])), _MAX_UNIT) or "-", a=scales[i][0], b=scales[i][1],
                readings=counts[i], missing=missing[i], dropped=dropped[i])
        for i, (device, metric) in enumerate(keys))
    ids = [c.ch_id for c in channels]
    if len(set(ids)) < len(ids):
        raise ComtradeError("device_id", "channel ids collide once cut to 128 characters; shorten device ids")
    devices = sorted({d for d, _ in keys})
    if rec_dev_id is None:
        rec_dev_id = devices[0] if len(devices) == 1 else "SmartGrid Sentinel"
    if line_frequency_hz is None:
        line_frequency_hz = _line_frequency(keys, samples)
    times = tuple(t0 + timedelta(microseconds=q * timemult) for q in instants)
    name = _file_name(name or f"{station or 'station'}_{t0:%Y%m%dT%H%M%S}Z")

    cfg_lines = [
        f"{_field(station, _MAX_STATION)},{_field(rec_dev_id, _MAX_STATION)},{REV_YEAR}",
        f"{len(channels)},{len(channels)}A,0D",
        *(f"{c.number},{c.ch_id},{c.ph},{_field(c.device_id, _MAX_CCBM)},{c.unit},{_real(c.a)},{_real(c.b)},0,"
          f"{mins[c.number - 1]},{maxs[c.number - 1]},1,1,P" for c in channels),
        _real(line_frequency_hz),
        str(len(rates)),
        *(f"{_real(samp)},{end}" for samp, end in rates or [(0.0, len(samples))]),
        _cfg_time(t0),
        _cfg_time(trigger),
        _FT[fmt],
        str(timemult),
        "0,0",
        f"{'F' if unsynced else 'A'},3",
    ]
    cfg = ("\r\n".join(cfg_lines) + "\r\n").encode()
    dat = _dat(fmt, instants, codes)
    hdr = _header(station, devices, channels, t0, times[-1], trigger, len(samples), rates, timemult, align_s,
                  fmt, notes)
    return ComtradeRecord(name=name, format=fmt, cfg=cfg, dat=dat, hdr=hdr, station=station, channels=channels,
                          start=t0, trigger=trigger, times=times, nrates=len(rates), time_multiplier=timemult)


# -- pieces -------------------------------------------------------------------------------------

def _usable(r: Reading) -> float | None:
    v = r.value
    if v is None or not math.isfinite(v) or r.flags & _UNUSABLE:
        return None
    return float(v)


def _time_multiplier(span_us: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... microseconds per timestamp count that lets the
    record's span fit the 4-byte timestamp."""
    mult = 1
    while span_us // mult > _TS_MAX:
        mult = mult * 5 // 2 if str(mult)[0] == "2" else mult * 2
    return mult


def _scale(values: list[float], code_max: int) -> tuple[float, float, int | None]:
    """(a, b, decimals): decimals is k when the values are exactly multiples of 10^-k (then a = 10^-k)."""
    if not values:
        return 1.0, 0.0, None
    lo, hi = min(values), max(values)
    for k in range(10):
        scale = 10**k
        if max(abs(lo), abs(hi)) * scale >= 1e15:
            break
        ints = [round(v * scale) for v in values]
        if all(n / scale == v for v, n in zip(values, ints, strict=True)):  # the decimal that reads as v
            lo_n, hi_n = min(ints), max(ints)
            mid = (lo_n + hi_n) // 2
            if hi_n - mid <= code_max and mid - lo_n <= code_max:
                return 1 / scale, mid / scale, k
            break
    if hi == lo:
        return 1.0, lo, None
    return (hi - lo) / (2 * code_max), (hi + lo) / 2, None


def _code(v: float, a: float, b: float, decimals: int | None, code_max: int) -> int:
    if decimals is not None:
        scale = 10**decimals
        return round(v * scale) - round(b * scale)
    return max(-code_max, min(code_max, round((v - b) / a)))


def _rates(instants: list[int], timemult: int) -> list[tuple[float, int]]:
    """(samp, endsamp) per stretch of even spacing, or [] (nrates = 0) when there are more than
    MAX_RATES, when they average fewer than MIN_STRETCH intervals (irregular instants), or for one sample."""
    runs: list[tuple[int, int]] = []  # (spacing, last sample number)
    for i in range(1, len(instants)):
        d = instants[i] - instants[i - 1]
        if runs and runs[-1][0] == d:
            runs[-1] = (d, i + 1)
        else:
            runs.append((d, i + 1))
        if len(runs) > MAX_RATES:
            return []
    if len(instants) - 1 < MIN_STRETCH * len(runs):
        return []
    return [(1_000_000 / (d * timemult), end) for d, end in runs]


def _line_frequency(keys: list[tuple[str, str]], samples: list[tuple[int, dict[int, float | None]]]) -> float:
    channels = {i for i, (_, metric) in enumerate(keys) if metric == "frequency"}
    values = [v for _, row in samples for ch, v in row.items() if ch in channels and v is not None]
    if not values:
        return 50.0
    median = statistics.median(values)
    return 60.0 if abs(median - 60) < abs(median - 50) else 50.0


def _dat(fmt: str, instants: list[int], codes: list[list[int]]) -> bytes:
    if fmt == "ascii":
        return "".join(f"{n},{q}{''.join(f',{x}' for x in row)}\r\n"
                       for n, (q, row) in enumerate(zip(instants, codes, strict=True), start=1)).encode()
    row_format = struct.Struct(f"<II{len(codes[0]) if codes else 0}{_PACK[fmt]}")
    return b"".join(row_format.pack(n, q, *row)
                    for n, (q, row) in enumerate(zip(instants, codes, strict=True), start=1))


def _header(station: str, devices: list[str], channels: tuple[Channel, ...], start: datetime, end: datetime,
            trigger: datetime, samples: int, rates: list[tuple[float, int]], timemult: int, align_s: float,
            fmt: str, notes: Sequence[str]) -> bytes:
    base = ("sample rates from the data: "
            + "; ".join(f"{_real(samp)} Hz to sample {end}" for samp, end in rates) if rates
            else "timestamps per sample (nrates 0): the readings are not evenly spaced")
    lines = [
        "SmartGrid Sentinel: readings as a COMTRADE record (IEEE C37.111-2013)",
        *notes,
        f"Station: {station}",
        f"Devices: {', '.join(devices)}",
        f"First sample: {start.isoformat()}; last: {end.isoformat()}; trigger: {trigger.isoformat()} (UTC)",
        f"Samples: {samples}; time base: the readings' own instants, to {timemult} us"
        + (f", readings of different channels within {align_s:g} s sharing a sample" if align_s else ""),
        f"Time: {base}",
        f"Data file: {_FT[fmt]}; values are primary quantities (value = a * code + b); the missing-value code "
        f"({_MISSING[fmt]}) marks a channel without a reading at a sample, or with one without a usable value "
        "(none, not finite, or flagged invalid, comm_lost or substituted)",
        "Channels (readings, of them missing, dropped as duplicates):",
        *(f"  {c.number}: {c.ch_id} [{c.unit}] {c.readings}, {c.missing}, {c.dropped}" for c in channels),
    ]
    return ("\r\n".join(_printable(line) for line in lines) + "\r\n").encode()


def _cfg_time(t: datetime) -> str:
    return f"{t:%d/%m/%Y},{t:%H:%M:%S}.{t.microsecond:06d}"


def _real(x: float) -> str:
    """A real as the .cfg takes it: the shortest text that reads back as the same double."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x)).upper()


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def _field(text: str, width: int) -> str:
    """A .cfg field: printable, no commas (the separator), at most ``width`` characters."""
    return _printable(text).replace(",", ";")[:width].strip()


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "record"
