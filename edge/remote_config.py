"""Remote config at the edge: fetch the config an operator gave this edge at the hub, check it, try
it against the devices, apply it or keep the running one, and tell the hub which and why.

Every ``[hub] config_pull_interval_s`` the edge asks ``GET /edge/config``. A version newer than the
one it runs (and not refused before) is:

1. **verified**: its Ed25519 signature, with the public key models are verified with (the file
   ``$<[scoring] public_key_env>`` names); an unsigned or altered config is refused;
2. **validated** as ``sentinel edge run`` reads a config (device templates beside the running
   config); it must name this edge;
3. **tried**: every device is read once, as ``sentinel edge check`` does (its own connections and
   client ids: the running daemon is not disturbed). A device none of whose points can be read means
   the new config cannot do what it must: the edge keeps the running config (``rolled_back``, with
   the device and the reason);
4. **applied**: the config file is replaced (the old one kept as ``<file>.previous``), the hub is
   told ``applied``, and the daemon stops as on Ctrl-C (flushing everything polled into the buffer)
   and starts again on the new file (:class:`RestartRequested`; ``sentinel edge run`` re-executes
   itself). Nothing buffered is lost; the polls of the second or two it takes to restart are not made.

The versions refused or rolled back are remembered in the buffer, so each is tried once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from edge.hubclient import hub_client
from protocols.config import ConfigError, FirmwareConfig, parse_config, template_dirs

if TYPE_CHECKING:
    from edge.daemon import EdgeDaemon

__all__ = ["ConfigPuller", "RestartRequested"]

log = logging.getLogger(__name__)

APPLIED = "config_version"  # buffer meta: the version this edge runs (0: its own file)
TRIED = "config_tried"  # buffer meta: the newest version refused or rolled back


class RestartRequested(Exception):
    """The daemon stops so that ``sentinel edge run`` starts again on the new config."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"config version {version} applied: restarting on it")


class _Config(msgspec.Struct, frozen=True):
    version: int
    toml: str
    signature: str


class ConfigPuller:
    def __init__(self, daemon: EdgeDaemon, config_path: str | os.PathLike[str], *, token: str | None = None,
                 wait_s: float = 5.0) -> None:
        self.daemon = daemon
        self.config: FirmwareConfig = daemon.config
        self.path = Path(config_path)
        self.token = token
        self.wait_s = wait_s
        self.last_error = ""

    async def run(self) -> None:
        interval = self.config.hub.config_pull_interval_s
        while True:
            try:
                await self.check_once()
            except RestartRequested:
                raise
            except Exception as exc:  # noqa: BLE001  (the hub may be away: try again next time)
                if str(exc) != self.last_error:
                    log.warning("remote config: %s", exc)
                self.last_error = str(exc)
            await asyncio.sleep(interval)

    async def check_once(self) -> str | None:
        """Fetch, and act on a new version; what was done (None: nothing new)."""
        async with hub_client(self.config.hub, token=self.token) as client:
            r = await client.get("/edge/config")
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise RuntimeError(f"GET /edge/config answered {r.status_code}")
            got = msgspec.json.decode(r.content, type=_Config)
            buffer = self.daemon.buffer
            applied = int(await asyncio.to_thread(buffer.get_meta, APPLIED))
            tried = int(await asyncio.to_thread(buffer.get_meta, TRIED))
            if got.version <= max(applied, tried):
                return None
            outcome, reason = await self._try(got)
            if outcome != "applied":
                await asyncio.to_thread(buffer.set_meta, TRIED, got.version)
                log.error("remote config version %d %s: %s", got.version, outcome.replace("_", " "), reason)
                await self._report(client, got.version, outcome, reason)
                return outcome
            await asyncio.to_thread(self._write, got.toml)
            await asyncio.to_thread(buffer.set_meta, APPLIED, got.version)
            await self._report(client, got.version, "applied", reason)
        log.warning("remote config version %d applied (%s); restarting on it", got.version, reason)
        raise RestartRequested(got.version)

    async def _try(self, got: _Config) -> tuple[str, str]:
        from edge.check import check_devices

        key_file = os.environ.get(self.config.scoring.public_key_env, "").strip()
        if not key_file:
            return "refused", (f"no public key to verify it: ${self.config.scoring.public_key_env} names none "
                               "(the file models are verified with)")
        try:
            from cryptography.exceptions import InvalidSignature

            from models.signing import load_public_key

            load_public_key(key_file).verify(bytes.fromhex(got.signature), got.toml.encode())
        except (InvalidSignature, ValueError) as exc:
            return "refused", f"its signature does not verify with {key_file}: {exc or 'altered or unsigned'}"
        try:
            new = parse_config(got.toml, f"config version {got.version}", templates=template_dirs(self.path))
        except ConfigError as exc:
            return "refused", str(exc)
        if new.identity.edge_id != self.config.identity.edge_id:
            return "refused", f"it is for edge {new.identity.edge_id!r}, not {self.config.identity.edge_id!r}"
        checks = await check_devices(new, wait_s=self.wait_s)
        by_device: dict[str, list[Any]] = {}
        for c in checks:
            by_device.setdefault(c.device_id, []).append(c)
        dead = {d: cs[0].error for d, cs in by_device.items() if not any(c.ok for c in cs)}
        if dead:
            return "rolled_back", (f"kept the running config: with version {got.version} "
                                   + "; ".join(f"device {d} could not be read ({why})" for d, why in sorted(dead.items())))
        read = sum(c.ok for c in checks)
        return "applied", f"{len(by_device)} devices, {read}/{len(checks)} points read when tried"

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.new")
        tmp.write_text(text)
        if self.path.exists():
            previous = self.path.with_name(self.path.name + ".previous")
            previous.write_bytes(self.path.read_bytes())
        os.replace(tmp, self.path)

    async def _report(self, client: httpx.AsyncClient, version: int, status: str, reason: str) -> None:
        try:
            r = await client.post("/edge/config/status", json={"version": version, "status": status,
                                                               "reason": reason[:2000]})
            if r.status_code != 200:
                log.warning("remote config: the hub answered %d to the report of version %d", r.status_code, version)
        except httpx.HTTPError as exc:
            log.warning("remote config: could not tell the hub about version %d: %s", version, exc)
