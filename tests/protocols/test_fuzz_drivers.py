"""Hostile devices against running drivers: a Modbus TCP server that answers badly on purpose, and
malformed MQTT payloads through a real Mosquitto.

Whatever a device sends, a source answers with values and quality flags, with a
:class:`~protocols.sources.SourceReadError` naming device, endpoint and what was wrong (the edge's
scheduler backs off and polls again), or, for pushed messages, with a dead letter naming the field;
never with another exception, never by hanging, and never at the expense of the good readings
around the bad ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import re
import sqlite3
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from protocols.config import FirmwareConfig, HubSettings, Identity
from protocols.modbus.codec import plan_blocks
from protocols.modbus.config import ModbusPoint, ModbusTcpDevice
from protocols.modbus.source import EXCEPTION_CODES, ModbusConnection, ModbusSource
from protocols.mqtt.config import MqttDevice, MqttPoint
from protocols.mqtt.source import MqttSource
from protocols.reading import QualityFlag
from protocols.sources import SourceReadError
from tests.conftest import free_port
from tests.support.mosquitto import MosquittoBroker
from tests.support.streams import Listener

pytestmark = pytest.mark.timeout(120)

INVALID = int(QualityFlag.INVALID)
TIMEOUT_S = 0.2

# -- a hostile Modbus TCP server --------------------------------------------------------------------------

MODES = [
    "good", "longer_than_declared", "exception:1", "exception:2", "exception:3", "exception:4", "exception:6",
    "exception:11", "short_frame", "declares_longer", "registers_short", "registers_long", "byte_count_low",
    "byte_count_high", "wrong_unit", "wrong_transaction", "wrong_function", "unknown_function", "garbage",
    "close_mid_frame", "close", "silent", "late", "oversized",
]
"""How the server may answer a request. ``good`` and ``longer_than_declared`` (a correct frame with
bytes after it) carry the right values; every other one must fail the read."""

_TIMEOUT = rf"timeout after {TIMEOUT_S}s"
_TIMEOUT_WITH_BYTES = rf"^{_TIMEOUT}; \d+ bytes arrived but no valid answer: [0-9a-f ]+( \.\.\.)?$"
_LOST = r"^connection lost after \d+ bytes of an incomplete or undecodable answer: [0-9a-f ]+( \.\.\.)?$"
_WHAT = {1: "coils", 2: "discrete inputs", 3: "holding registers", 4: "input registers"}
FAST = {"exception", "registers_short", "registers_long", "byte_count_low", "byte_count_high", "wrong_function",
        "unknown_function", "close_mid_frame", "close"}
"""Modes a read must fail on at once, not after waiting out its timeout."""


def expected_reason(mode: str, fc: int) -> str | None:
    """A regular expression for the SourceReadError reason ``mode`` must give, None if the values are good."""
    kind, _, arg = mode.partition(":")
    what = rf"a read of \d+ {_WHAT[fc]} from \d+ on unit 7"
    if kind in ("good", "longer_than_declared"):
        return None
    if kind in ("byte_count_low", "byte_count_high") and fc in (1, 2):
        return None  # pymodbus reads a coil answer's data bytes, not its byte count: the values are right
    return {
        "exception": rf"^Modbus exception {arg} \({re.escape(EXCEPTION_CODES.get(int(arg or 0), ''))}\) reading "
                     rf"\d+ {_WHAT[fc]} from \d+ on unit 7$",
        "short_frame": _TIMEOUT_WITH_BYTES, "declares_longer": _TIMEOUT_WITH_BYTES,
        "wrong_unit": _TIMEOUT_WITH_BYTES, "wrong_transaction": _TIMEOUT_WITH_BYTES, "garbage": _TIMEOUT_WITH_BYTES,
        "registers_short": rf"^answer with \d+ {'data bytes' if fc in (1, 2) else 'registers'} to {what}",
        "registers_long": rf"^answer with \d+ {'data bytes' if fc in (1, 2) else 'registers'} to {what}",
        "byte_count_low": rf"^answer with \d+ registers to {what}$",
        "byte_count_high": _LOST, "unknown_function": _LOST,
        "wrong_function": rf"^answer with function code \d+ to {what} \(function code {fc}\)$",
        "close_mid_frame": r"^connection lost after 5 bytes of an incomplete or undecodable answer: ",
        "close": r"^connection closed by the device before it answered$",
        "silent": rf"^{_TIMEOUT}$", "late": rf"^{_TIMEOUT}$",
        "oversized": rf"^{_TIMEOUT}(; \d+ bytes arrived but no valid answer: .*)?$",  # dropped whole or in part
    }[kind]


class HostileModbusServer:
    """A Modbus TCP server on 127.0.0.1 (port 0) serving ``image`` ((function code, address) ->
    register word or bit), answering each request as ``answer(request number, function code)`` says
    (one of :data:`MODES`). ``log`` keeps (function code, mode) per request."""

    def __init__(self, answer: Callable[[int, int], str], seed: int = 0,
                 before_answer: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.answer = answer
        self.before_answer = before_answer  # awaited with the request number before each answer
        self.image: dict[tuple[int, int], int] = {}
        self.log: list[tuple[int, str]] = []
        self.port = 0
        self._rng = random.Random(seed)
        self._writers: set[asyncio.StreamWriter] = set()
        self._late: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HostileModbusServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._late:
            task.cancel()
        for w in list(self._writers):
            w.close()
        await asyncio.gather(*self._late, return_exceptions=True)

    def _pdu(self, fc: int, start: int, count: int) -> bytes:
        """The correct answer's PDU."""
        if fc in (1, 2):
            bits = [self.image.get((fc, start + i), 0) for i in range(count)]
            data = bytes(sum(b << k for k, b in enumerate(bits[i:i + 8])) for i in range(0, count, 8))
        else:
            data = b"".join(struct.pack(">H", self.image.get((fc, start + i), 0)) for i in range(count))
        return bytes([fc, len(data)]) + data

    @staticmethod
    def _adu(tid: int, unit: int, pdu: bytes, declared: int | None = None) -> bytes:
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if declared is None else declared, unit) + pdu

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                tid, _pid, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                request = await reader.readexactly(length - 1)
                fc, (start, count) = request[0], struct.unpack(">HH", request[1:5])
                mode = self.answer(len(self.log), fc)
                self.log.append((fc, mode))
                frame = self._frame(mode, tid, unit, fc, start, count)
                if self.before_answer is not None:
                    await self.before_answer(len(self.log) - 1)
                if mode == "late":
                    self._late.add(asyncio.create_task(self._send_late(writer, frame)))
                elif frame:
                    writer.write(frame)
                    await writer.drain()
                if mode.startswith("close"):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send_late(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        await asyncio.sleep(TIMEOUT_S * 1.5)  # after the client gave up: it must not take this for a later answer
        try:
            writer.write(frame)
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    def _frame(self, mode: str, tid: int, unit: int, fc: int, start: int, count: int) -> bytes:
        pdu = self._pdu(fc, start, count)
        data = pdu[2:]
        step = 1 if fc in (1, 2) else 2  # bytes per item added or taken away
        kind, _, arg = mode.partition(":")
        if kind in ("good", "late"):
            return self._adu(tid, unit, pdu)
        if kind == "longer_than_declared":  # and what follows looks like the start of another frame
            return self._adu(tid, unit, pdu) + struct.pack(">HHH", tid + 1, 0, 9)
        if kind == "exception":
            return self._adu(tid, unit, bytes([fc | 0x80, int(arg)]))
        if kind == "short_frame":
            return self._adu(tid, unit, pdu)[:-2]
        if kind == "declares_longer":
            return self._adu(tid, unit, pdu, declared=len(pdu) + 11)
        if kind == "registers_short":
            return self._adu(tid, unit, bytes([fc, len(data) - step]) + data[:-step])
        if kind == "registers_long":
            return self._adu(tid, unit, bytes([fc, len(data) + step]) + data + b"\x00" * step)
        if kind == "byte_count_low":
            return self._adu(tid, unit, bytes([fc, len(data) - step]) + data)
        if kind == "byte_count_high":
            return self._adu(tid, unit, bytes([fc, len(data) + 4]) + data)
        if kind == "wrong_unit":
            return self._adu(tid, (unit + 1) % 256, pdu)
        if kind == "wrong_transaction":
            return self._adu((tid + 1) % 65536, unit, pdu)
        if kind == "wrong_function":
            other = {1: 2, 2: 1, 3: 4, 4: 3}[fc]
            return self._adu(tid, unit, bytes([other]) + pdu[1:])
        if kind == "unknown_function":
            return self._adu(tid, unit, bytes([0x41, 0]))
        if kind == "garbage":  # not even a Modbus TCP header (protocol id 0xbeef)
            return b"\xde\xad\xbe\xef" + bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(4, 60)))
        if kind == "close_mid_frame":
            return self._adu(tid, unit, pdu)[:5]
        if kind == "oversized":  # beyond the 260 bytes of a Modbus TCP frame
            return self._adu(tid, unit, bytes([fc, 255]) + bytes(400))
        assert kind in ("close", "silent"), mode
        return b""


POINTS = [
    ModbusPoint(metric="breaker_closed", address=10, register_type="coil", data_type="bool"),
    ModbusPoint(metric="door_open", address=5, register_type="discrete", data_type="bool"),
    ModbusPoint(metric="voltage_l1", unit="kV", address=100, data_type="float32"),
    ModbusPoint(metric="current_l1", unit="A", address=102, data_type="uint16", scale=0.1),
    ModbusPoint(metric="active_power", unit="MW", address=103, data_type="int32", word_order="little", scale=0.001),
    ModbusPoint(metric="oil_temperature", unit="degC", address=105, data_type="int16", scale=0.1),
    ModbusPoint(metric="frequency", unit="Hz", address=200, register_type="input", data_type="float32"),
    ModbusPoint(metric="energy", unit="MWh", address=202, register_type="input", data_type="float64",
                byte_order="little"),
]


def modbus_device(port: int, device_id: str = "RELAY-7", **kw: object) -> ModbusTcpDevice:
    return ModbusTcpDevice(id=device_id, host="127.0.0.1", port=port, unit_id=7, timeout_s=TIMEOUT_S,
                           poll_interval_s=1.0, points=POINTS, **kw)


def serve(server: HostileModbusServer, g: int, bad: dict[str, float] | None = None) -> np.ndarray:
    """Put generation ``g`` of the device's values in the server's registers (``bad``: raw values
    that override them); return the values the edge must read, worked out with struct and floats."""
    raw = {"breaker_closed": g % 2, "door_open": (g + 1) % 2, "voltage_l1": 11.0 + g / 8,
           "current_l1": 2000 + g, "active_power": -5_000_000 - g, "oil_temperature": 650 + g,
           "frequency": 50.0 - g / 128, "energy": 12345.678 + g}
    raw.update(bad or {})
    words = {
        (1, 10): [int(raw["breaker_closed"])], (2, 5): [int(raw["door_open"])],
        (3, 100): list(struct.unpack(">HH", struct.pack(">f", raw["voltage_l1"]))),
        (3, 102): [int(raw["current_l1"])],
        (3, 103): list(struct.unpack(">HH", struct.pack(">i", int(raw["active_power"]))))[::-1],
        (3, 105): list(struct.unpack(">H", struct.pack(">h", int(raw["oil_temperature"])))),
        (4, 200): list(struct.unpack(">HH", struct.pack(">f", raw["frequency"]))),
        (4, 202): list(struct.unpack("<HHHH", struct.pack(">d", raw["energy"]))),  # bytes swapped in each word
    }
    for (fc, address), ws in words.items():
        for k, w in enumerate(ws):
            server.image[(fc, address + k)] = w
    return np.array([raw[p.metric] * p.scale + p.offset for p in POINTS])


async def read_once(source: ModbusSource) -> tuple[tuple[np.ndarray, np.ndarray] | SourceReadError, float]:
    """One poll, bounded: the values or the SourceReadError, and how long it took. Anything else fails."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(len(source.blocks) * TIMEOUT_S + 2.0):  # never hangs
            result: tuple[np.ndarray, np.ndarray] | SourceReadError = await source.read()
    except SourceReadError as exc:
        assert (exc.device_id, exc.endpoint) == (source.device_id, source.endpoint)
        assert str(exc).startswith(f"{source.device_id} at modbus_tcp://127.0.0.1:")
        result = exc
    return result, loop.time() - started


def assert_values(result: object, want: np.ndarray, flags: list[int] | None = None) -> None:
    assert isinstance(result, tuple), f"expected values, got {result!r}"
    values, got_flags = result
    assert got_flags.tolist() == (flags or [0] * len(POINTS))
    np.testing.assert_array_equal(values, want)


def test_the_device_layout_reads_in_four_requests() -> None:
    dev = modbus_device(502)
    assert [(b.register_type, b.start, b.count) for b in plan_blocks(dev.points, dev.max_block_registers)] == [
        ("coil", 10, 1), ("discrete", 5, 1), ("holding", 100, 6), ("input", 200, 6)]


@pytest.mark.parametrize("fc", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", MODES[1:])
def test_one_hostile_answer_fails_that_poll_by_name_and_the_next_poll_reads_true_values(mode: str, fc: int) -> None:
    """The request of function code ``fc`` in the second poll gets ``mode``; the first and third
    polls are answered well, each with its own values."""
    hostile_at: list[int] = []

    def answer(n: int, code: int) -> str:
        if hostile_at == [] and n >= 4 and code == fc:
            hostile_at.append(n)
            return mode
        return "good"

    async def main() -> None:
        async with HostileModbusServer(answer) as server:
            dev = modbus_device(server.port)
            conn = ModbusConnection(dev)
            source = ModbusSource(dev, conn)
            try:
                for g in range(3):
                    want = serve(server, g)
                    result, took = await read_once(source)
                    if g != 1:
                        assert_values(result, want)
                        continue
                    assert hostile_at and server.log[hostile_at[0]] == (fc, mode)
                    reason = expected_reason(mode, fc)
                    if reason is None:
                        assert_values(result, want)
                        continue
                    assert isinstance(result, SourceReadError), f"{mode}: expected a read error, got {result!r}"
                    assert re.search(reason, result.reason), (mode, result.reason)
                    assert took < (TIMEOUT_S if mode.partition(":")[0] in FAST else 2 * TIMEOUT_S + 0.5), took
            finally:
                conn.close()

    asyncio.run(main())


@contextlib.contextmanager
def server_in_a_thread(answer: Callable[[int, int], str],
                       before_answer: Callable[[int], Awaitable[None]] | None = None) -> Iterator[HostileModbusServer]:
    """A HostileModbusServer on its own event loop in another thread: it answers on time even while
    the client's loop is stalled."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = HostileModbusServer(answer, before_answer=before_answer)
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.parametrize("mode", ["good", "exception:2"])
def test_an_answer_that_arrives_as_the_deadline_passes_is_the_answer_not_a_timeout(mode: str) -> None:
    """A busy box: the loop stalls past the deadline while the device's answer sits in the socket.
    When the loop runs again the answer and the deadline are due together; the answer wins (it used
    to be reported as "timeout ...; 9 bytes arrived but no valid answer" with the answer's bytes)."""

    async def main(server: HostileModbusServer) -> None:
        dev = modbus_device(server.port)
        conn = ModbusConnection(dev)
        source = ModbusSource(dev, conn)
        client_loop.append(asyncio.get_running_loop())
        try:
            want = serve(server, 0)
            assert_values((await read_once(source))[0], want)  # connected
            want = serve(server, 1)
            n = len(server.log)
            result, _ = await read_once(source)
            assert server.log[n] == (1, mode)
            reason = expected_reason(mode, 1)
            if reason is None:
                assert_values(result, want)
            else:
                assert isinstance(result, SourceReadError), result
                assert re.search(reason, result.reason), result.reason
        finally:
            conn.close()

    client_loop: list[asyncio.AbstractEventLoop] = []

    async def stall_the_client(n: int) -> None:
        """Request 4 (the second poll's first): the client's loop stalls past its deadline, and the
        answer is sent while it is stalled."""
        if n == 4:
            client_loop[0].call_soon_threadsafe(time.sleep, TIMEOUT_S * 2)
            await asyncio.sleep(TIMEOUT_S / 4)

    with server_in_a_thread(lambda n, fc: mode if n == 4 else "good", stall_the_client) as server:
        asyncio.run(main(server))


def test_values_the_device_cannot_vouch_for_are_flagged_invalid_and_the_others_kept() -> None:
    async def main() -> None:
        async with HostileModbusServer(lambda n, fc: "good") as server:
            dev = modbus_device(server.port)
            conn = ModbusConnection(dev)
            source = ModbusSource(dev, conn)
            try:
                bad = {"voltage_l1": math.inf, "oil_temperature": -0x8000, "frequency": math.nan,
                       "energy": -math.inf}
                want = serve(server, 3, bad)
                result, _ = await read_once(source)
                flags = [INVALID if p.metric in bad else 0 for p in POINTS]
                assert isinstance(result, tuple)
                ok = np.array(flags) == 0
                assert result[1].tolist() == flags
                np.testing.assert_array_equal(result[0][ok], want[ok])
                assert not np.isfinite(result[0][~ok]).any()
                want_next = serve(server, 4)  # good values again: nothing of the bad ones sticks
                assert_values((await read_once(source))[0], want_next)
            finally:
                conn.close()

    asyncio.run(main())


@pytest.mark.parametrize("seed", [1, 2])
def test_a_random_mix_of_hostile_answers_never_crashes_hangs_or_serves_a_stale_value(seed: int) -> None:
    """Every request gets a random answer (half of them good), and every poll new values: a poll
    whose requests were all answered well returns exactly that poll's values (never a late or
    leftover answer to an earlier one), any other fails with the reason of its bad answer."""
    rng = random.Random(seed)
    weights = [120 if m == "good" else 1 for m in MODES]

    def answer(_n: int, _fc: int) -> str:
        return rng.choices(MODES, weights)[0]

    async def main() -> tuple[int, int]:
        good = failed = 0
        async with HostileModbusServer(answer, seed) as server:
            dev = modbus_device(server.port)
            conn = ModbusConnection(dev)
            source = ModbusSource(dev, conn)
            try:
                for g in range(30):
                    want = serve(server, g)
                    first = len(server.log)
                    result, _ = await read_once(source)
                    answered = server.log[first:]
                    reasons = [expected_reason(mode, fc) for fc, mode in answered]
                    if len(answered) == len(source.blocks) and all(r is None for r in reasons):
                        assert_values(result, want)
                        good += 1
                    else:
                        assert isinstance(result, SourceReadError), (answered, result)
                        assert reasons[-1] is not None and all(r is None for r in reasons[:-1]), answered
                        assert re.search(reasons[-1], result.reason), (answered[-1], result.reason)
                        failed += 1
            finally:
                conn.close()
        return good, failed

    good, failed = asyncio.run(main())
    assert good >= 5 and failed >= 5, (good, failed)


# -- MQTT payloads through a real broker ------------------------------------------------------------------

MQTT_POINTS = [MqttPoint(metric="voltage_l1", unit="kV", nominal=11.0),
               MqttPoint(metric="oil_temperature", unit="degC"), MqttPoint(metric="frequency", unit="Hz")]
_ids = itertools.count()
FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("mqtt-fuzz")) as b:
        yield b


def mqtt_device(port: int) -> MqttDevice:
    return MqttDevice(id=f"TR-F{next(_ids)}", host="127.0.0.1", port=port, points=MQTT_POINTS, connect_timeout_s=3.0)


def hostile_messages(dev: MqttDevice, seed: int = 3) -> tuple[list[tuple[str, bytes]], list[tuple[int, float, int]],
                                                             list[str]]:
    """Hostile payloads, each between good ones. Returns the messages, the good readings they
    carry (point index, value, flags) and the reason each dead letter must give (a regex)."""
    rng = random.Random(seed)
    base = f"substations/S1/{dev.id}"
    good_ts = "2026-03-01T10:15:23Z"

    def reading(metric: str, value: object, **kw: object) -> dict:
        return {"device_id": dev.id, "sensor_type": metric.split("_")[0], "metric": metric, "value": value,
                "timestamp": good_ts, **kw}

    def enc(obj: object) -> bytes:
        return msgspec.json.encode(obj)

    deep = b"[" * 100_000 + b"]" * 100_000
    hostile: list[tuple[str, bytes, str]] = [
        (f"{base}/voltage_l1", b"\xff" + rng.randbytes(2000), r"^invalid JSON: "),
        (f"{base}/voltage_l1", b"\xff" + rng.randbytes(FIVE_MB), r"^invalid JSON: "),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0, unit="k" * FIVE_MB)),
         r"^unit: Expected `str` of length <= 16$"),
        (f"{base}/voltage_l1", b"[" + b"1," * (FIVE_MB // 2) + b"1]",
         r"^payload: Expected `float \| null`, got `array`"),
        (f"{base}/voltage_l1", deep, r"^payload: Expected `float \| null`, got `array`"),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0))[:-1] + b',"metadata":{"x":' + deep + b"}}",
         r"^invalid JSON: nested too deeply to decode$"),
        (base, b'{"sensor_readings":[' + deep + b"]}", r"^invalid JSON: nested too deeply to decode$"),
        (base, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, r"^a: unknown field$"),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", "11.0")), r"^value: Expected `float \| null`, got `str`$"),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0, timestamp=1_772_360_123)),
         r"^timestamp: Expected `datetime`, got `int`$"),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0, device_id=4)), r"^device_id: Expected `str`, got `int`$"),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0, quality_flags="invalid")),
         r"^quality_flags: Expected `array`, got `str`$"),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0, timestamp="9999-12-31T23:59:59-14:00")),
         r"^timestamp: 9999-12-31T23:59:59-14:00 is out of range in UTC$"),
        (f"{base}/voltage_l1", b"true", r"^payload: Expected `float \| null`, got `bool`"),
        (f"{base}/voltage_l1", b'"11.0"', r"^payload: Expected `float \| null`, got `str`"),
        (f"{base}/voltage_l1", b"\xc3\x28\xa0\xa1", r"^invalid JSON: "),
        (f"{base}/voltage_l1", enc(reading("voltage_l1", 1.0))[:-1] + b',"unit":"\xff\xfe"}', r"^invalid JSON: "),
        (f"{base}/voltage_l1", b"", r"^empty payload$"),
        (f"{base}/voltage_l1", b" \r\n\t", r"^empty payload$"),
        (f"{base}/voltage_l1", b"NaN", r"^invalid JSON: "),
        (f"{base}/voltage_l1", b"1e999", r"^payload: Number out of range"),
        (f"{base}/voltage_l1", b"\x00" * 64, r"^invalid JSON: "),
        (f"{base}/no_such_point", b"1.0", rf"^unknown metric 'no_such_point' for device {dev.id}$"),
        (f"{base}/voltage_l1/deeper", b"1.0", r"does not match template"),
        (base, b"1.0", r"^a bare value needs a topic that names the metric"),
        (base, enc({"sensor_readings": []}), r"^sensor_readings: Expected `array` of length >= 1$"),
        # what a publisher names comes back in the reason, escaped: one line, no fake log lines
        (f"{base}/voltage_l1", enc({**reading("voltage_l1", 1.0), "x\n2026-03-01 ERROR forged\u202e\x00": 1}),
         r"^x\\n2026-03-01 ERROR forged\\u202e\\x00: unknown field$"),
        # (Mosquitto refuses control characters in a topic; a right-to-left override gets through)
        (f"{base}/voltage_l1/a\u202eb", b"1.0",
         r"^topic substations/S1/TR-F\d+/voltage_l1/a\\u202eb does not match template"),
    ]
    good: list[tuple[int, float, int]] = []
    messages: list[tuple[str, bytes]] = []
    reasons: list[str] = []
    for i, (topic, payload, reason) in enumerate(hostile):
        value = 100.0 + i
        messages.append((f"{base}/oil_temperature", repr(value).encode()))  # a bare value
        good.append((1, value, 0))
        messages.append((topic, payload))
        reasons.append(reason)
    # a batch with bad readings among good ones: the good ones count
    messages.append((base, enc({"sensor_readings": [
        reading("frequency", 49.5), reading("frequency", "fifty"),
        reading("voltage_l1", None, quality_flags=["comm_lost"]),
        {"device_id": dev.id}, reading("frequency", 49.75, quality_flags=["invalid", "stale"])]})))
    good += [(2, 49.5, 0), (0, math.nan, int(QualityFlag.COMM_LOST)),
             (2, 49.75, int(QualityFlag.INVALID | QualityFlag.STALE))]
    reasons += [r"^sensor_readings\[1\]\.value: Expected `float \| null`, got `str`$",
                r"^sensor_readings\[3\]\.sensor_type: missing required field$"]
    # and about 5 MB of good readings in one message
    big = [reading("frequency", 40.0 + k / 1024) for k in range(45_000)]
    messages.append((base, enc({"sensor_readings": big})))
    good += [(2, 40.0 + k / 1024, 0) for k in range(45_000)]
    return messages, good, reasons


def test_hostile_payloads_become_dead_letters_with_reasons_and_every_good_reading_arrives(
        broker: MosquittoBroker) -> None:
    dev = mqtt_device(broker.port)
    messages, good, reasons = hostile_messages(dev)
    assert len(messages[-1][1]) > 4_500_000

    async def main() -> Listener:
        async with Listener(MqttSource(dev, client_id=f"edge-{dev.id}")) as ear:
            await asyncio.to_thread(broker.publish, messages)
            await ear.until(lambda: ear.readings >= len(good) and len(ear.dead) >= len(reasons), timeout_s=30)
            await asyncio.sleep(0.2)  # nothing more comes
            assert ear.source.stats.connected  # the source kept running: no reconnect, no crash
            return ear

    ear = asyncio.run(main())
    assert ear.errors == []
    got = sorted(zip(np.concatenate([u.index for u in ear.updates]).tolist(), ear.values().tolist(),
                     np.concatenate([u.flags for u in ear.updates]).tolist()), key=repr)
    assert len(got) == len(good)
    for (gi, gv, gf), (wi, wv, wf) in zip(got, sorted(good, key=repr)):
        assert (gi, gf) == (wi, wf) and (gv == wv or (math.isnan(gv) and math.isnan(wv)))
    unmatched = [d.reason for d in ear.dead]
    for pattern in reasons:  # each dead letter says why, as expected
        hit = next((r for r in unmatched if re.search(pattern, r)), None)
        assert hit is not None, (pattern, unmatched)
        unmatched.remove(hit)
    assert unmatched == []
    for d in ear.dead:
        assert d.reason.isprintable(), d.reason
        assert d.source == f"{dev.id}@127.0.0.1:{broker.port}" and d.topic.startswith(f"substations/S1/{dev.id}")
        assert len(d.payload) <= 64 * 1024 and "\x00" not in d.payload
    stats = ear.source.stats
    assert (stats.rejected, stats.readings, stats.disconnects) == (len(reasons), len(good), 0)


# -- both, through the edge daemon ------------------------------------------------------------------------


def test_the_edge_daemon_keeps_every_good_reading_through_hostile_devices(broker: MosquittoBroker,
                                                                          tmp_path: Path) -> None:
    """A Modbus device answering one request in eleven badly and an MQTT device sent hostile payloads:
    the daemon keeps running, buffers every good poll's true values and every good MQTT reading,
    records the bad polls as the device going down (with the reason) and the bad messages as dead
    letters with theirs."""
    from edge.daemon import EdgeDaemon

    bad_modes = [m for m in MODES if expected_reason(m, 3) is not None and m != "late"]

    def answer(n: int, _fc: int) -> str:  # a poll is four requests: about one poll in three fails
        return bad_modes[(n // 11) % len(bad_modes)] if n % 11 == 10 else "good"

    mqtt_dev = mqtt_device(broker.port)
    messages, good, reasons = hostile_messages(mqtt_dev)
    messages = messages[:-1]  # the daemon test does without the 5 MB batch
    good = good[:-45_000]
    buffer = tmp_path / "edge.db"

    async def main() -> tuple[EdgeDaemon, np.ndarray, int]:
        async with HostileModbusServer(answer) as server:
            want = serve(server, 0)
            modbus_dev = msgspec.structs.replace(modbus_device(server.port), poll_interval_s=0.3)
            config = FirmwareConfig(identity=Identity(edge_id="edge-fuzz", substation="FUZZ-S1"),
                                    hub=HubSettings(url=f"http://127.0.0.1:{free_port()}"),
                                    devices=[modbus_dev, mqtt_dev])
            daemon = EdgeDaemon(config, buffer_path=buffer)
            task = asyncio.create_task(daemon.run(), name="test.edge")
            mqtt_source = next(d.source for d in daemon.devices if d.id == mqtt_dev.id)
            assert isinstance(mqtt_source, MqttSource)
            deadline = time.monotonic() + 30
            while not mqtt_source.stats.connected:
                assert time.monotonic() < deadline and not task.done(), daemon.stats.devices
                await asyncio.sleep(0.02)
            await asyncio.to_thread(broker.publish, messages)
            health = daemon.stats.devices[modbus_dev.id]
            while (health.polls < 8 or health.failures < 3 or daemon.stats.dead_letters < len(reasons)
                   or mqtt_source.stats.readings < len(good)):
                assert not task.done(), task  # a crash of any device's task ends the daemon
                assert time.monotonic() < deadline, (daemon.stats, mqtt_source.stats)
                await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return daemon, want, len(server.log)

    daemon, want, requests = asyncio.run(main())
    health = daemon.stats.devices["RELAY-7"]
    assert health.polls >= 8 and health.failures >= 3 and requests >= 8 * 4
    db = sqlite3.connect(buffer)
    try:
        rows = db.execute("SELECT metric, value, flags FROM readings WHERE device_id = 'RELAY-7'"
                          " ORDER BY seq").fetchall()
        by_metric: dict[str, set[tuple[float | None, int]]] = {}
        for metric, value, flags in rows:
            by_metric.setdefault(metric, set()).add((value, flags))
        # every poll that was kept carries the device's true values, never a partial or stale one
        assert by_metric == {p.metric: {(float(v), 0)} for p, v in zip(POINTS, want)}, by_metric
        assert len(rows) == len(POINTS) * health.polls
        events = [msgspec.msgpack.decode(body) for (body,) in db.execute("SELECT body FROM events ORDER BY seq")]
        offline = [e for e in events if e["device_id"] == "RELAY-7" and e["type"] == "device_offline"]
        assert offline and offline[0]["state"] == "raised" and "stopped answering: " in offline[0]["description"]
        dead = db.execute("SELECT source, reason FROM dead_letters").fetchall()
        assert len(dead) == len(reasons) and all(reason for _, reason in dead)
        mqtt_rows = db.execute("SELECT count(*) FROM readings WHERE device_id = ?", (mqtt_dev.id,)).fetchone()[0]
        assert mqtt_rows == len(good)
    finally:
        db.close()
