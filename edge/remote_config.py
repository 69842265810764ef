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

A config on probation can also stop the daemon itself from starting (a buffer path it cannot write,
an exception in its start-up) or make it crash soon after. ``sentinel edge run`` runs inside
:class:`StartGuard`, which keeps a marker beside the config file (``<file>.probation``: the version,
the one to go back to, the file's SHA-256, whether a run is under way and how the last one ended).
A run on that version that ends in an exception records the error; the next start puts
``<file>.previous`` back and starts on it. So does the start that finds :data:`MAX_UNEXPLAINED_ENDS`
runs ended without a word (killed, or the box lost power). The marker goes when the probation is
confirmed or rolled back; a config file changed since (by hand) is not the remote one and is left
alone, and so is a config not on probation: its failures are the service manager's to retry.

Reports the hub has not taken yet (a rollback at start, before the daemon runs, or one while the hub
was away) wait in ``<file>.reports`` and are sent from the next config pull on, until the hub answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from edge.hubclient import hub_client
from protocols.config import ConfigError, FirmwareConfig, parse_config, template_dirs

if TYPE_CHECKING:
    from edge.daemon import EdgeDaemon

__all__ = ["ConfigPuller", "RestartRequested", "StartGuard"]

log = logging.getLogger(__name__)

# buffer meta (numbers, kept across restarts)
APPLIED = "config_version"  # the version this edge runs (0: its own file)
TRIED = "config_tried"  # the newest version refused or rolled back
PREVIOUS = "config_previous_version"  # the version in <file>.previous (what a rollback goes back to)
PROBATION = "config_probation_version"  # the version on probation (0: none)
PROBATION_UNTIL = "config_probation_until"  # when its probation ends (seconds since the epoch)

PROBATION_TICK_S = 1.0  # how often device health is looked at during a probation
# runs of a config on probation that may end without a word (killed, crashed hard, power lost) before
# the next start goes back to the previous config
MAX_UNEXPLAINED_ENDS = 3


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


class _Guard(msgspec.Struct):
    """``<file>.probation``: a config applied from the hub whose starts are watched until confirmed."""

    version: int  # the config version in the file
    previous: int  # the version in <file>.previous
    sha256: str  # of the file as applied: a file changed since is not this version
    running: bool = False  # a run on it started and has not said how it ended
    unexplained: int = 0  # runs that ended without a word (killed, crashed hard, power lost)
    error: str = ""  # how the last run failed ("": it did not)


class _Report(msgspec.Struct, frozen=True):
    """A report the hub has not taken yet (``<file>.reports``)."""

    version: int
    previous: int
    status: str
    reason: str


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` in ``path`` whole or not at all (a power cut leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.new")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _restore(path: Path) -> None:
    """``<file>.previous`` back in place; the config it replaces kept as ``<file>.rolled_back``."""
    _beside(path, ".rolled_back").write_bytes(path.read_bytes())
    _write_atomic(path, _beside(path, ".previous").read_bytes())


def _pending_reports(path: Path) -> list[_Report]:
    try:
        return msgspec.json.decode(_beside(path, ".reports").read_bytes(), type=list[_Report])
    except FileNotFoundError:
        return []
    except (OSError, msgspec.DecodeError) as exc:
        log.warning("remote config: reports not yet sent to the hub cannot be read from %s: %s",
                    _beside(path, ".reports"), exc)
        return []


def _keep_report(path: Path, report: _Report) -> None:
    """Add ``report`` to those waiting for the hub (``<file>.reports``)."""
    _write_atomic(_beside(path, ".reports"), msgspec.json.encode([*_pending_reports(path), report]))


def _failure(exc: BaseException | None) -> str:
    """What ended a run, in one line ("" for a clean stop: Ctrl-C, a restart on a config, exit 0)."""
    if exc is None or isinstance(exc, KeyboardInterrupt | RestartRequested | asyncio.CancelledError):
        return ""
    if isinstance(exc, SystemExit):
        return "" if exc.code in (0, None) else f"exit status {exc.code}"
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            if why := _failure(e):
                return why
        return ""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:1000]


class StartGuard:
    """``with StartGuard(config_path): ...`` around a run of ``sentinel edge run``: entering, if the
    config in the file is one from the hub on probation whose last run failed (or
    :data:`MAX_UNEXPLAINED_ENDS` runs ended without a word), puts ``<file>.previous`` back first and
    keeps the report for the hub; else notes that a run started. Leaving, notes how it ended: an
    exception (but Ctrl-C, a restart on a config, exit status 0) is a failure the next start acts on.
    Does nothing for a config not on probation. Never raises: a marker it cannot use is logged."""

    def __init__(self, config_path: str | os.PathLike[str]) -> None:
        self.path = Path(config_path)
        self.marker = _beside(self.path, ".probation")
        self.version: int | None = None  # the version whose run is watched (None: none)
        self.rolled_back: int | None = None  # the version put aside at this start

    def __enter__(self) -> StartGuard:
        try:
            self._begin()
        except (OSError, msgspec.DecodeError) as exc:
            log.error("remote config: cannot watch this start with %s (%s): starting without it", self.marker, exc)
            self.version = None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.version is None:
            return
        try:
            guard = self._read()
            if guard is None or guard.version != self.version:  # confirmed, rolled back or replaced meanwhile
                return
            guard.running = False
            if error := _failure(exc):
                guard.error = error
                log.error("remote config version %d failed on probation: %s; the next start goes back to version %d",
                          guard.version, error, guard.previous)
            _write_atomic(self.marker, msgspec.json.encode(guard))
        except (OSError, msgspec.DecodeError) as e:
            log.error("remote config: cannot note how this run ended in %s: %s", self.marker, e)

    def _read(self) -> _Guard | None:
        try:
            return msgspec.json.decode(self.marker.read_bytes(), type=_Guard)
        except FileNotFoundError:
            return None

    def _begin(self) -> None:
        guard = self._read()
        if guard is None:
            return
        if hashlib.sha256(self.path.read_bytes()).hexdigest() != guard.sha256:
            log.warning("remote config version %d: %s changed since it was applied (by hand?); its starts are not "
                        "watched", guard.version, self.path)
            self.marker.unlink(missing_ok=True)
            return
        if guard.error:
            self._roll_back(guard, f"failed to start or run: {guard.error}")
            return
        if guard.running:
            guard.unexplained += 1
            if guard.unexplained >= MAX_UNEXPLAINED_ENDS:
                self._roll_back(guard, f"ended {guard.unexplained} runs without stopping (killed, crashed or power "
                                       "lost) before its probation was confirmed")
                return
            log.warning("remote config version %d: its last run ended without stopping (killed, crashed or power "
                        "lost); %d of %d such ends go back to version %d", guard.version, guard.unexplained,
                        MAX_UNEXPLAINED_ENDS, guard.previous)
        guard.running = True
        _write_atomic(self.marker, msgspec.json.encode(guard))
        self.version = guard.version

    def _roll_back(self, guard: _Guard, why: str) -> None:
        previous = _beside(self.path, ".previous")
        if not previous.is_file():
            log.error("remote config version %d %s, but there is no %s to go back to: starting on it", guard.version,
                      why, previous)
            self.marker.unlink(missing_ok=True)
            return
        reason = f"rolled back to version {guard.previous} at start: version {guard.version} {why}"
        _keep_report(self.path, _Report(guard.version, guard.previous, "rolled_back", reason))
        _restore(self.path)
        self.marker.unlink(missing_ok=True)
        self.rolled_back = guard.version
        log.error("remote config %s", reason)


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
        self._settle()

    def _settle(self) -> None:
        """A rollback at start (:class:`StartGuard`) could not touch the buffer: record it there now,
        before anything reads the version run (each step holds only while it is still to be done)."""
        buffer = self.daemon.buffer
        for report in _pending_reports(self.path):
            if report.status != "rolled_back":
                continue
            if int(buffer.get_meta(APPLIED)) == report.version:
                buffer.set_meta(APPLIED, report.previous)
            if int(buffer.get_meta(PROBATION)) == report.version:
                buffer.set_meta(PROBATION, 0)
            if int(buffer.get_meta(TRIED)) < report.version:
                buffer.set_meta(TRIED, report.version)

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
                await self.send_reports()
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
            watched = self.config.hub.config_probation_s > 0  # its starts too (StartGuard)
            await asyncio.to_thread(self._write, got.toml, (got.version, applied) if watched else None)
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
        try:  # in a child process, off the event loop: the edge never imports cryptography
            from models.verify_signature import verify_data_in_child

            await asyncio.to_thread(verify_data_in_child, key_file, bytes.fromhex(got.signature), got.toml.encode())
        except ValueError as exc:  # SignatureRefused too
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
            await asyncio.to_thread(self._unguard, version)
            return
        previous = await asyncio.to_thread(self._previous_config)
        if isinstance(previous, str):
            log.warning("remote config version %d: no probation: %s", version, previous)
            await asyncio.to_thread(buffer.set_meta, PROBATION, 0)
            await asyncio.to_thread(self._unguard, version)
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
        await asyncio.to_thread(self._unguard, version)
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
        await asyncio.to_thread(_keep_report, self.path, _Report(version, previous, "rolled_back", reason))
        await asyncio.to_thread(_restore, self.path)
        await asyncio.to_thread(self._unguard, version)
        for key, value in ((TRIED, max(tried, version)), (APPLIED, previous), (PROBATION, 0)):
            await asyncio.to_thread(buffer.set_meta, key, value)
        self.probation = {}
        log.error("remote config version %d %s", version, reason)
        try:
            waiting = await self.send_reports()
        except Exception as exc:  # noqa: BLE001  (the report waits; the restart must not)
            waiting, why = 1, f": {exc}"
        else:
            why = ""
        if waiting:
            log.warning("remote config: the hub did not take the report of version %d%s; it is sent once it answers",
                        version, why)
        raise RestartRequested(previous, f"config version {version} rolled back to version {previous}")

    def _write(self, text: str, guard: tuple[int, int] | None = None) -> None:
        """The config file replaced by ``text`` (the old one kept as ``<file>.previous``); with
        ``guard`` (its version, the previous version), its starts watched by :class:`StartGuard`
        (the marker written first: a crash before the file is replaced leaves a marker whose SHA-256
        is not the file's, which the guard drops)."""
        tmp = self.path.with_name(f".{self.path.name}.new")
        tmp.write_text(text, encoding="utf-8")
        marker = _beside(self.path, ".probation")
        if guard is not None:
            sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
            _write_atomic(marker, msgspec.json.encode(_Guard(version=guard[0], previous=guard[1], sha256=sha)))
        else:
            marker.unlink(missing_ok=True)
        if self.path.exists():
            previous = self.path.with_name(self.path.name + ".previous")
            previous.write_bytes(self.path.read_bytes())
        os.replace(tmp, self.path)

    def _unguard(self, version: int) -> None:
        """The starts of ``version`` no longer watched (confirmed, rolled back, or not on probation)."""
        marker = _beside(self.path, ".probation")
        try:
            guard = msgspec.json.decode(marker.read_bytes(), type=_Guard)
        except FileNotFoundError:
            return
        except msgspec.DecodeError:
            guard = None
        if guard is None or guard.version == version:
            marker.unlink(missing_ok=True)

    async def send_reports(self) -> int:
        """Send the reports the hub has not taken yet (``<file>.reports``); those it answers are done.
        Returns how many still wait (the hub away: not logged here, the config pull says so)."""
        reports = await asyncio.to_thread(_pending_reports, self.path)
        if not reports:
            return 0
        done: list[_Report] = []
        async with hub_client(self.config.hub, token=self.token) as client:
            for report in reports:
                if await self._report(client, report.version, report.status, report.reason, quiet=True):
                    done.append(report)
        if done:
            await asyncio.to_thread(self._forget_reports, done)
            log.info("remote config: told the hub about version%s %s", "s" if len(done) > 1 else "",
                     ", ".join(f"{r.version} ({r.status.replace('_', ' ')})" for r in done))
        return len(reports) - len(done)

    def _forget_reports(self, done: list[_Report]) -> None:
        left = [r for r in _pending_reports(self.path) if r not in done]
        if left:
            _write_atomic(_beside(self.path, ".reports"), msgspec.json.encode(left))
        else:
            _beside(self.path, ".reports").unlink(missing_ok=True)

    async def _tell(self, version: int, status: str, reason: str) -> None:
        """:meth:`_report` on a client of its own (during probation no check holds one open)."""
        async with hub_client(self.config.hub, token=self.token) as client:
            await self._report(client, version, status, reason)

    async def _report(self, client: httpx.AsyncClient, version: int, status: str, reason: str, *,
                      quiet: bool = False) -> bool:
        """Whether the hub answered (a refusal included: sending it again would not change it; a
        server error or no answer: worth sending again). ``quiet``: no answer is not logged."""
        try:
            r = await client.post("/edge/config/status", json={"version": version, "status": status,
                                                               "reason": reason[:2000]})
            if r.status_code != 200:
                log.warning("remote config: the hub answered %d to the report of version %d", r.status_code, version)
            return r.status_code < 500 and r.status_code not in (401, 403, 408, 429)
        except httpx.HTTPError as exc:
            if not quiet:
                log.warning("remote config: could not tell the hub about version %d: %s", version, exc)
            return False
