"""MQTT: messages and readings per second one MqttSource takes from a local Mosquitto, beside a bare
paho subscriber, and the CPU both need at 5,000 readings per second.

Starts its own Mosquitto (tests/support/mosquitto.py). The publisher is a separate process (this
script with ``--publish``), so it does not share the receivers' interpreter.

Throughput (``mqtt_*_msgs_per_s``, ``mqtt_*_readings_per_s``): each receiver first connects once
(persistent session, QoS 1) and leaves; the publisher queues N messages at the broker while it is
away; then the receiver connects again and drains them. The time runs from the connect call to the
moment the last message has been handled: for the raw baseline, counted in paho's ``on_message``;
for MqttSource, decoded into an Update and yielded by ``stream()``. Same broker, same publisher,
same messages, same run; runs interleaved (raw, ours, raw, ours, ...), best of ``--repeat``.
Payloads: one reading per message (``single``) and batches of 100 readings (``batch100``).

CPU (``mqtt_cpu_pct_at_5000_per_s_*``): the publisher sends 5,000 readings per second for
``--seconds`` (single: 5,000 messages/s; batch100: 50 messages/s) while a receiver is connected;
the figure is the receiving process's CPU time over the wall time, in percent of one core. Here
the ratio is ours over raw: above 1 is the cost of decoding and batching.

    .venv/bin/python benchmarks/bench_mqtt.py [--single 50000] [--batches 2000] [--repeat 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

from _common import Figure, machine, print_json_lines, use_repo_root

use_repo_root()

import msgspec  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from protocols.mqtt.config import MqttDevice, MqttPoint  # noqa: E402
from protocols.mqtt.source import MqttSource  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

DEVICE_ID = "BENCH-TR-1"
METRICS = [f"sensor_{i:03d}" for i in range(100)]
BATCH = 100


def device(port: int) -> MqttDevice:
    return MqttDevice(id=DEVICE_ID, host="127.0.0.1", port=port, qos=1,
                      points=[MqttPoint(metric=m, unit="degC") for m in METRICS])


# -- the publisher (a separate process) -----------------------------------------------------------

def payloads(kind: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` messages of ``kind`` for the bench device: (topic, payload)."""
    enc = msgspec.json.encode
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        ts = (t0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")
        if kind == "single":
            m = METRICS[i % len(METRICS)]
            out.append((f"substations/S1/{DEVICE_ID}/{m}", enc(
                {"device_id": DEVICE_ID, "sensor_type": "temperature", "metric": m, "value": 60.0 + (i % 1000) / 100,
                 "timestamp": ts})))
        else:
            out.append((f"substations/S1/{DEVICE_ID}", enc({"sensor_readings": [
                {"device_id": DEVICE_ID, "sensor_type": "temperature", "metric": m, "value": 60.0 + j / 100,
                 "timestamp": ts} for j, m in enumerate(METRICS)]})))
    return out


def publish_main(port: int, kind: str, n: int, rate_per_s: float) -> None:
    """Publish ``n`` messages at QoS 1 (as fast as the broker takes them, or at ``rate_per_s``)."""
    messages = payloads(kind, n)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{kind}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    infos = []
    for i, (topic, payload) in enumerate(messages):
        if rate_per_s > 0:
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


def publish(port: int, kind: str, n: int, rate_per_s: float = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--publish", str(port), kind, str(n), str(rate_per_s)])


# -- the receivers --------------------------------------------------------------------------------

class RawSubscriber:
    """The baseline: a bare paho client (threaded loop) that counts messages."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port, self.client_id = port, client_id
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        self.client: mqtt.Client | None = None

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def connect(self, target: int = 1 << 62) -> None:
        self.count, self.target = 0, target
        self.done.clear()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        subscribed = threading.Event()
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        c.subscribe(f"substations/+/{DEVICE_ID}/#", qos=1)
        subscribed.wait(10)
        self.client = c

    def disconnect(self) -> None:
        assert self.client is not None
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None


async def source_drain(source: MqttSource, readings: int) -> float:
    """Seconds from stream() to the update holding the last of ``readings``."""
    got = 0
    start = time.perf_counter()
    async for update in source.stream():
        got += len(update.ts)
        if got >= readings:
            break
    elapsed = time.perf_counter() - start
    await source.close()
    return elapsed


async def source_prime(source: MqttSource) -> None:
    """Connect once so the broker keeps a session (and subscription) for this client id."""
    stream = source.stream()
    task = asyncio.ensure_future(stream.__anext__())
    for _ in range(500):
        if source.stats.connected and source.session._client is not None:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the SUBACK
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, StopAsyncIteration):
        pass
    await stream.aclose()
    await source.close()


def throughput(broker: MosquittoBroker, kind: str, n: int, repeat: int) -> tuple[list[float], list[float]]:
    """(raw seconds, ours seconds) per run, interleaved."""
    per_msg = 1 if kind == "single" else BATCH
    raw = RawSubscriber(broker.port, f"bench-raw-{kind}")
    ours_device = device(broker.port)
    raw_s: list[float] = []
    ours_s: list[float] = []
    raw.connect()
    raw.disconnect()
    asyncio.run(source_prime(MqttSource(ours_device, client_id=f"bench-ours-{kind}")))
    for _ in range(repeat):
        # raw: queue n messages while away, then drain them
        publish(broker.port, kind, n).wait()
        start = time.perf_counter()
        raw.connect(target=n)
        if not raw.done.wait(600):
            raise RuntimeError(f"raw subscriber got {raw.count} of {n}")
        raw_s.append(time.perf_counter() - start)
        raw.disconnect()
        # ours
        publish(broker.port, kind, n).wait()
        source = MqttSource(ours_device, client_id=f"bench-ours-{kind}", batch_max_messages=1000)
        ours_s.append(asyncio.run(source_drain(source, n * per_msg)))
        if source.stats.rejected:
            raise RuntimeError(f"{source.stats.rejected} rejected: {source.stats.last_reject}")
    return raw_s, ours_s


def cpu_share(broker: MosquittoBroker, kind: str, seconds: float) -> tuple[float, float]:
    """(raw %, ours %) of one core while 5,000 readings/s arrive."""
    rate = 5000.0 if kind == "single" else 5000.0 / BATCH
    n = int(rate * seconds)
    per_msg = 1 if kind == "single" else BATCH

    raw = RawSubscriber(broker.port, f"bench-cpu-raw-{kind}")
    raw.connect(target=n)
    pub = publish(broker.port, kind, n, rate)
    while raw.count == 0:  # measure from the first message to the last
        time.sleep(0.001)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    raw.done.wait(seconds * 3 + 30)
    raw_pct = 100 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    pub.wait()
    raw.disconnect()

    async def ours() -> float:
        source = MqttSource(device(broker.port), client_id=f"bench-cpu-ours-{kind}")
        stream = source.stream()
        got = 0
        started = asyncio.get_running_loop().create_future()

        async def consume() -> None:
            nonlocal got
            async for update in stream:
                if not started.done():
                    started.set_result((time.perf_counter(), time.process_time()))
                got += len(update.ts)
                if got >= n * per_msg:
                    return

        task = asyncio.create_task(consume())
        for _ in range(1000):
            if source.stats.connected:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        proc = publish(broker.port, kind, n, rate)
        wall0, cpu0 = await started
        await task
        pct = 100 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        await stream.aclose()
        await source.close()
        await asyncio.to_thread(proc.wait)
        return pct

    return raw_pct, asyncio.run(ours())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--single", type=int, default=50_000, help="single-reading messages per run (50,000)")
    ap.add_argument("--batches", type=int, default=2_000, help="100-reading batch messages per run (2,000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the CPU-share runs (5 s)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp, MosquittoBroker(tmp, max_queued_messages=2_000_000,
                                                                extra="max_queued_bytes 0") as broker:
        for kind, n in (("single", args.single), ("batch100", args.batches)):
            per_msg = 1 if kind == "single" else BATCH
            raw_s, ours_s = throughput(broker, kind, n, args.repeat)
            raw_best, ours_best = min(raw_s), min(ours_s)
            for fig in (Figure(f"mqtt_{kind}_msgs_per_s", n / ours_best, "msgs/s", n / raw_best),
                        Figure(f"mqtt_{kind}_readings_per_s", n * per_msg / ours_best, "rows/s",
                               n * per_msg / raw_best)):
                print(fig.human(), flush=True)
                figures.append(fig)
        for kind in ("single", "batch100"):
            raw_pct, ours_pct = cpu_share(broker, kind, args.seconds)
            fig = Figure(f"mqtt_cpu_pct_at_5000_per_s_{kind}", ours_pct, "% core", raw_pct)
            print(fig.human(), flush=True)
            figures.append(fig)
    print_json_lines(figures)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        publish_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
