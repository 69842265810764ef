"""A throwaway Mosquitto broker for tests and benchmarks: the simulator's, on 127.0.0.1 and free ports.

    with MosquittoBroker(tmp_dir, tls=True, users={"edge": "s3cret"}) as broker:
        broker.port, broker.tls_port     # 127.0.0.1, free ports
        broker.ca_file                   # the test CA that signed the broker's certificate
        broker.client_cert, broker.client_key
        broker.kill(); broker.start()    # a broker crash and its restart, on the same ports

Everything but one thing is :class:`simulator.mqtt_broker.MosquittoBroker` (see there): when no
``mosquitto`` binary is installed, entering the context skips the calling test outside CI and
fails under CI (``CI`` set), where a skipped MQTT suite would hide a missing install step
(``scripts/system-deps.sh`` installs it).
"""

from __future__ import annotations

import os
import sys
from typing import Self

from simulator.mqtt_broker import MosquittoBroker as _Broker
from simulator.mqtt_broker import MosquittoNotFound, find_mosquitto, make_certificates

__all__ = ["MosquittoBroker", "MosquittoNotFound", "find_mosquitto", "make_certificates"]


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class MosquittoBroker(_Broker):
    """The simulator's broker on 127.0.0.1 and free ports; skips the test when Mosquitto is missing."""

    def __enter__(self) -> Self:
        try:
            find_mosquitto()
        except MosquittoNotFound as exc:
            if not _under_ci() and "pytest" in sys.modules:
                import pytest

                pytest.skip(f"Mosquitto not installed: {exc}")
            raise
        return super().__enter__()
