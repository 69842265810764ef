"""Pulling models from the hub: check for a new version, verify it, swap it into the scorer.

Every ``[scoring] model_pull_interval_s`` the edge asks ``GET /models/{name}/latest``; a version it
does not run yet is downloaded (``/models/{name}/{version}/files/...``), verified with the public
key in the file ``$<public_key_env>`` names (signature over the manifest, then the ``.onnx`` hash,
``models.signing.verify_model``, run in a short-lived child process by ``models.verify_signature``:
the edge never imports ``cryptography``), loaded off the event loop and swapped in with ``Scorer.swap``,
which keeps the previous model for rollback. Scoring never waits for any of this: the batch being
scored finishes with the model it started with, and no reading is dropped.

A model that verified is also kept on disk (``cache_dir``, a registry of its own beside the
buffer): after a restart the edge verifies it again and scores with it before the hub answers, so
a substation cut off from the hub keeps its model.

A model that fails verification or does not load is refused: scoring goes on with the model it
had (or the detectors alone), the status says ``model refused: <reason>``, and the reason is logged
once as an ERROR (again only if it changes); so is one the child process could not check (it did
not answer within a minute, crashed or could not be started). Imports ``models.runtime``,
``models.registry`` and ``models.verify_signature`` only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated

import httpx
import msgspec

from edge.hubclient import hub_client, read_capped
from models.registry import Registry, RegistryError, write_model_files
from models.runtime import ModelLoadError, Scorer, load_model
from models.signing import ModelFiles, ModelVerificationError
from models.verify_signature import verify_model_in_child
from protocols.config import FirmwareConfig

__all__ = ["ModelPuller", "ModelRefused"]

log = logging.getLogger(__name__)

_FILES = ("onnx", "manifest", "signature")


class ModelRefused(Exception):
    """A model version the edge will not run: why (signature, hash, graph, key)."""


class _Latest(msgspec.Struct):
    name: str
    version: Annotated[int, msgspec.Meta(ge=1, le=999_999_999)]  # it becomes a directory name in the cache


# the most of each answer the edge reads: a hostile hub cannot make it hold more in memory
MAX_ANSWER_BYTES = {"latest": 64 * 1024, "onnx": 256 * 1024 * 1024, "manifest": 1024 * 1024, "signature": 4096}


class ModelPuller:
    def __init__(self, config: FirmwareConfig, scorer: Scorer, client: httpx.AsyncClient | None = None,
                 cache_dir: str | Path | None = None, token: str | None = None) -> None:
        scoring = config.scoring
        self.name = scoring.model
        self.interval_s = scoring.model_pull_interval_s
        self.key_env = scoring.public_key_env
        self.scorer = scorer
        # token: the edge's credential, instead of $<hub.token_env>; TLS verification and pinning as
        # [hub] configures them (edge.hubclient)
        self._client = client or hub_client(config.hub, token)
        self.version: int | None = None  # the version running
        self.refused = ""  # why the last version offered was refused; "" when the latest runs
        self.refused_version: int | None = None
        self.last_error = ""  # the hub could not be asked (not a refusal)
        self.swaps = 0
        self.cache = Registry(cache_dir) if cache_dir is not None else None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def pull_once(self) -> bool:
        """Ask the hub for the latest version; fetch, verify and swap it in if new. Returns whether
        a model was swapped in. Raises ``httpx.HTTPError`` if the hub cannot be asked."""
        answer = msgspec.json.decode(await self._get(f"/models/{self.name}/latest", "latest"), type=_Latest)
        if answer.name != self.name:
            raise msgspec.ValidationError(f"the hub answered for model {answer.name!r}, not {self.name!r}")
        latest = answer.version
        if latest == self.version:
            return False
        files = [await self._get(f"/models/{self.name}/{latest}/files/{kind}", kind) for kind in _FILES]
        try:
            model = await asyncio.to_thread(self._verify_and_load, ModelFiles(*files), latest)
        except ModelRefused as exc:
            reason = str(exc)
            if reason != self.refused:  # log on change, not once per pull
                log.error("model %s v%d refused, scoring goes on with %s: %s", self.name, latest,
                          self.scorer.model.label if self.scorer.model else "the detectors alone", reason)
            self.refused, self.refused_version = reason, latest
            return False
        self._use(model, latest)
        if self.cache is not None:
            try:
                await asyncio.to_thread(self._keep, ModelFiles(*files), latest)
            except OSError as exc:
                log.warning("cannot keep model %s on disk at %s: %s", model.label, self.cache.root, exc)
        return True

    def _use(self, model, version: int) -> None:
        old = self.scorer.swap(model)
        self.version, self.refused, self.refused_version = version, "", None
        self.swaps += 1
        log.info("model %s in use (was %s)", model.label, old.label if old else "detectors only")

    def _keep(self, files: ModelFiles, version: int) -> None:
        """Store a verified version in the local cache, point ``latest`` at it, keep the last two."""
        assert self.cache is not None
        d = self.cache.root / self.name
        d.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=d))
        write_model_files(tmp, files)
        target = d / str(version)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
        self.cache.set_latest(self.name, version)
        for old in self.cache.versions(self.name)[:-2]:
            if old != version:
                shutil.rmtree(d / str(old), ignore_errors=True)

    async def load_cached(self) -> bool:
        """Score with the model kept on disk by an earlier run (verified again); whether there was one."""
        if self.cache is None or not self.cache.versions(self.name):
            return False
        try:
            model = await asyncio.to_thread(self._load_cached)
        except ModelRefused as exc:
            log.error("model %s kept at %s refused: %s", self.name, self.cache.root, exc)
            self.refused = f"cached copy: {exc}"
            return False
        self._use(model, model.manifest.version)
        return True

    def _load_cached(self):
        assert self.cache is not None
        path = os.environ.get(self.key_env)
        if not path:
            raise ModelRefused(f"no public key to verify it with: ${self.key_env} is not set")
        try:
            return Registry(self.cache.root, verifier=partial(verify_model_in_child, key_file=path)).load(self.name)
        except (ModelVerificationError, ModelLoadError, RegistryError, ValueError, OSError) as exc:
            raise ModelRefused(str(exc)) from exc

    def _verify_and_load(self, files: ModelFiles, version: int):
        path = os.environ.get(self.key_env)
        if not path:
            raise ModelRefused(f"no public key to verify it with: ${self.key_env} is not set")
        try:
            manifest = verify_model_in_child(files, path, where=f"{self.name} v{version} from the hub")
            if manifest.name != self.name or manifest.version != version:
                raise ModelRefused(f"the hub served {manifest.label} as {self.name} v{version}")
            return load_model(manifest, files.onnx)
        except (ModelVerificationError, ModelLoadError, ValueError, OSError) as exc:
            raise ModelRefused(str(exc)) from exc

    async def _get(self, path: str, what: str) -> bytes:
        """One answer of the hub, at most ``MAX_ANSWER_BYTES[what]`` of it read."""
        async with self._client.stream("GET", path) as resp:
            resp.raise_for_status()
            return await read_capped(resp, MAX_ANSWER_BYTES[what])

    async def run(self) -> None:
        await self.load_cached()
        while True:
            try:
                await self.pull_once()
                self.last_error = ""
            except Exception as exc:  # noqa: BLE001 - no answer of the hub may stop the edge; scoring goes on
                error = str(exc) or type(exc).__name__
                if error != self.last_error:
                    log.warning("cannot check the hub for model %s: %s", self.name, error)
                self.last_error = error
            await asyncio.sleep(self.interval_s)
