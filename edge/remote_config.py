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
5. **on probation** for ``[hub] config_probation_s`` after the apply (300 s; 0: none): a device the
   previous config also has that stays down for the grace time (:func:`grace_s`) is read once with
   the previous config; if that reads it, the new config is to blame: the edge puts
   ``<file>.previous`` back (the failed one kept as ``<file>.rolled_back``), tells the hub
   ``rolled_back`` with the device and its error, and restarts on the old config. A device the
   previous config cannot read either is down, not misconfigured, and rolls nothing back. When the
   window passes, the config is confirmed (the hub is told ``applied`` again, "confirmed"). No new
   version is taken meanwhile.

The versions refused or rolled back are remembered in the buffer, so each is tried once; so is the
probation (version and end), so it goes on across the restart that applies the config, and any other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
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

# buffer meta (numbers, kept across restarts)
APPLIED = "config_version"  # the version this edge runs (0: its own file)
TRIED = "config_tried"  # the newest version refused or rolled back
PREVIOUS = "config_previous_version"  # the version in <file>.previous (what a rollback goes back to)
PROBATION = "config_probation_version"  # the version on probation (0: none)
PROBATION_UNTIL = "config_probation_until"  # when its probation ends (seconds since the epoch)

PROBATION_TICK_S = 1.0  # how often device health is looked at during a probation


def grace_s(poll_interval_s: float, probation_s: float) -> float:
    """How long a device may stay down during a probation before the config is suspected: 30 s, or
    three of its poll intervals if longer, but at most half the window (so it is seen within it)."""
    return min(probation_s / 2, max(30.0, 3 * poll_interval_s))


class RestartRequested(Exception):
    """The daemon stops so that ``sentinel edge run`` starts again on the config file (new, or the
    previous one put back). ``version``: the config version it will run."""

    def __init__(self, version: int, message: str = "") -> None:
        self.version = version
        self.message = message or f"config version {version} applied"
        super().__init__(f"{self.message}: restarting on it")


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
        self.probation: dict[str, float] = {}  # while on probation: {"version": .., "until": ..}

    def snapshot(self) -> dict:
        """For ``sentinel edge status --json``: the probation under way (if any) and the last error."""
        return {"probation": dict(self.probation) or None, "last_error": self.last_error}

    async def run(self) -> None:
        interval = self.config.hub.config_pull_interval_s
        try:  # a config applied just before this run must first prove itself
            await self.watch_probation()
        except RestartRequested:
            raise
        except Exception:  # a fault in the watching must not stop the daemon
            log.exception("remote config: watching the probation failed; the running config stays")
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
            await asyncio.to_thread(self._start_probation, applied, got.version)
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

    def _start_probation(self, previous: int, version: int) -> None:
        """Record ``version`` as the one run, ``previous`` as the one to go back to, and the end of
        the probation (the running config's ``config_probation_s`` from now)."""
        buffer, window = self.daemon.buffer, self.config.hub.config_probation_s
        buffer.set_meta(PREVIOUS, previous)
        buffer.set_meta(PROBATION_UNTIL, time.time() + window)
        buffer.set_meta(PROBATION, version if window > 0 else 0)
        buffer.set_meta(APPLIED, version)

    async def watch_probation(self) -> None:
        """If the running config is on probation, watch its devices until the window ends (then
        confirm it) or one that the previous config reads stays down (then roll back: raises
        :class:`RestartRequested`). Returns at once when not on probation."""
        buffer = self.daemon.buffer
        version = int(await asyncio.to_thread(buffer.get_meta, PROBATION))
        if not version:
            return
        applied = int(await asyncio.to_thread(buffer.get_meta, APPLIED))
        until = float(await asyncio.to_thread(buffer.get_meta, PROBATION_UNTIL))
        if version != applied:  # a probation left over from a version no longer run: nothing to watch
            await asyncio.to_thread(buffer.set_meta, PROBATION, 0)
            return
        previous = await asyncio.to_thread(self._previous_config)
        if isinstance(previous, str):
            log.warning("remote config version %d: no probation: %s", version, previous)
            await asyncio.to_thread(buffer.set_meta, PROBATION, 0)
            return
        window = self.config.hub.config_probation_s
        before = {d.id: d for d in previous.devices}
        watched = {d.id: grace_s(getattr(d, "poll_interval_s", 1.0), window)
                   for d in self.config.devices if d.id in before}
        self.probation = {"version": version, "until": until}
        log.info("remote config version %d on probation for %.0f s more: watching %s", version,
                 max(0.0, until - time.time()), ", ".join(sorted(watched)) or "no device the previous config had")
        loop = asyncio.get_running_loop()
        down_since: dict[str, float] = {}
        while (left := until - time.time()) > 0:
            now = loop.time()
            for dev_id, grace in sorted(watched.items()):
                health = self.daemon.stats.devices[dev_id]
                if health.online is not False:
                    down_since.pop(dev_id, None)
                    continue
                down_s = now - down_since.setdefault(dev_id, now)
                if down_s < grace:
                    continue
                if await self._previous_reads(previous, before[dev_id]):
                    await self._roll_back(version, dev_id, self._error(dev_id), down_s)
                log.warning("remote config version %d: device %s down for %.0f s, but the previous config "
                            "cannot read it either: the device is down, not the config", version, dev_id, down_s)
                del watched[dev_id]  # not the config's doing: no longer held against it
            await asyncio.sleep(min(PROBATION_TICK_S, left))
        await asyncio.to_thread(buffer.set_meta, PROBATION, 0)
        self.probation = {}
        reason = (f"confirmed: every device the previous config read ({', '.join(sorted(watched)) or 'none'}) "
                  f"answered through the {window:g} s probation")
        log.info("remote config version %d %s", version, reason)
        await self._tell(version, "applied", reason)

    def _previous_config(self) -> FirmwareConfig | str:
        """The config in ``<file>.previous``, or why there is none to go back to."""
        path = self.path.with_name(self.path.name + ".previous")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return f"cannot read {path} to go back to: {exc.strerror or exc}"
        try:
            return parse_config(text, str(path), templates=template_dirs(self.path))
        except ConfigError as exc:
            return f"the config to go back to does not load: {exc}"

    def _error(self, dev_id: str) -> str:
        """A down device's last error, with where the running config looks for it."""
        where = sorted({d.source.endpoint for d in self.daemon.devices if d.id == dev_id})
        error = self.daemon.stats.devices[dev_id].last_error or "no answer"
        return f"{', '.join(where)}: {error}" if where else error

    async def _previous_reads(self, previous: FirmwareConfig, device: Any) -> bool:
        """Whether the previous config reads ``device`` now (at least one point, as ``edge check``)."""
        from edge.check import check_devices

        try:
            checks = await check_devices(msgspec.structs.replace(previous, devices=[device]), wait_s=self.wait_s)
        except Exception as exc:  # noqa: BLE001  (a check that cannot run is no reason to roll back)
            log.warning("remote config: could not read device %s with the previous config: %s", device.id, exc)
            return False
        return any(c.ok for c in checks)

    async def _roll_back(self, version: int, dev_id: str, error: str, down_s: float) -> None:
        """Put ``<file>.previous`` back, record and report why, and restart on it."""
        buffer = self.daemon.buffer
        previous = int(await asyncio.to_thread(buffer.get_meta, PREVIOUS))
        tried = int(await asyncio.to_thread(buffer.get_meta, TRIED))
        reason = (f"rolled back to version {previous} on probation: with version {version} device {dev_id} did "
                  f"not answer for {down_s:.0f} s ({error}); the previous config reads it")
        await asyncio.to_thread(self._restore)
        for key, value in ((TRIED, max(tried, version)), (APPLIED, previous), (PROBATION, 0)):
            await asyncio.to_thread(buffer.set_meta, key, value)
        self.probation = {}
        log.error("remote config version %d %s", version, reason)
        await self._tell(version, "rolled_back", reason)
        raise RestartRequested(previous, f"config version {version} rolled back to version {previous}")

    def _restore(self) -> None:
        """``<file>.previous`` back in place; the config it replaces kept as ``<file>.rolled_back``."""
        previous = self.path.with_name(self.path.name + ".previous")
        tmp = self.path.with_name(f".{self.path.name}.new")
        tmp.write_bytes(previous.read_bytes())
        self.path.with_name(self.path.name + ".rolled_back").write_bytes(self.path.read_bytes())
        os.replace(tmp, self.path)

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.new")
        tmp.write_text(text)
        if self.path.exists():
            previous = self.path.with_name(self.path.name + ".previous")
            previous.write_bytes(self.path.read_bytes())
        os.replace(tmp, self.path)

    async def _tell(self, version: int, status: str, reason: str) -> None:
        """:meth:`_report` on a client of its own (during probation no check holds one open)."""
        async with hub_client(self.config.hub, token=self.token) as client:
            await self._report(client, version, status, reason)

    async def _report(self, client: httpx.AsyncClient, version: int, status: str, reason: str) -> None:
        try:
            r = await client.post("/edge/config/status", json={"version": version, "status": status,
                                                               "reason": reason[:2000]})
            if r.status_code != 200:
                log.warning("remote config: the hub answered %d to the report of version %d", r.status_code, version)
        except httpx.HTTPError as exc:
            log.warning("remote config: could not tell the hub about version %d: %s", version, exc)
