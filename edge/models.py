"""Pulling models from the hub: check for a new version, verify it, swap it into the scorer.

Every ``[scoring] model_pull_interval_s`` the edge asks ``GET /models/{name}/latest``; a version it
does not run yet is downloaded (``/models/{name}/{version}/files/...``), verified with the public
key in the file ``$<public_key_env>`` names (signature over the manifest, then the ``.onnx`` hash,
``models.signing.verify_model``), loaded off the event loop and swapped in with ``Scorer.swap``,
which keeps the previous model for rollback. Scoring never waits for any of this: the batch being
scored finishes with the model it started with, and no reading is dropped.

A model that fails verification or does not load is refused: scoring goes on with the model it
had (or the detectors alone), the status says ``model refused: <reason>``, and the reason is logged
once as an ERROR (again only if it changes). Imports ``models.runtime`` and ``models.signing`` only.
"""

from __future__ import annotations

import asyncio
import logging
import os

import httpx
import msgspec

from models.runtime import ModelLoadError, Scorer, load_model
from models.signing import (
    ModelFiles,
    ModelVerificationError,
    load_public_key,
    verify_model,
)
from protocols.config import FirmwareConfig

__all__ = ["ModelPuller", "ModelRefused"]

log = logging.getLogger(__name__)

_FILES = ("onnx", "manifest", "signature")


class ModelRefused(Exception):
    """A model version the edge will not run: why (signature, hash, graph, key)."""


class _Latest(msgspec.Struct):
    name: str
    version: int


class ModelPuller:
    def __init__(self, config: FirmwareConfig, scorer: Scorer, client: httpx.AsyncClient | None = None) -> None:
        scoring = config.scoring
        self.name = scoring.model
        self.interval_s = scoring.model_pull_interval_s
        self.key_env = scoring.public_key_env
        self.scorer = scorer
        hub = config.hub
        headers = {}
        if token := hub.token():
            headers["authorization"] = f"Bearer {token}"
        self._client = client or httpx.AsyncClient(base_url=hub.url.rstrip("/"), timeout=hub.timeout_s,
                                                   headers=headers)
        self.version: int | None = None  # the version running
        self.refused = ""  # why the last version offered was refused; "" when the latest runs
        self.refused_version: int | None = None
        self.last_error = ""  # the hub could not be asked (not a refusal)
        self.swaps = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def pull_once(self) -> bool:
        """Ask the hub for the latest version; fetch, verify and swap it in if new. Returns whether
        a model was swapped in. Raises ``httpx.HTTPError`` if the hub cannot be asked."""
        resp = await self._client.get(f"/models/{self.name}/latest")
        resp.raise_for_status()
        latest = msgspec.json.decode(resp.content, type=_Latest).version
        if latest == self.version:
            return False
        files = []
        for kind in _FILES:
            r = await self._client.get(f"/models/{self.name}/{latest}/files/{kind}")
            r.raise_for_status()
            files.append(r.content)
        try:
            model = await asyncio.to_thread(self._verify_and_load, ModelFiles(*files), latest)
        except ModelRefused as exc:
            reason = str(exc)
            if reason != self.refused:  # log on change, not once per pull
                log.error("model %s v%d refused, scoring goes on with %s: %s", self.name, latest,
                          self.scorer.model.label if self.scorer.model else "the detectors alone", reason)
            self.refused, self.refused_version = reason, latest
            return False
        old = self.scorer.swap(model)
        self.version, self.refused, self.refused_version = latest, "", None
        self.swaps += 1
        log.info("model %s in use (was %s)", model.label, old.label if old else "detectors only")
        return True

    def _verify_and_load(self, files: ModelFiles, version: int):
        path = os.environ.get(self.key_env)
        if not path:
            raise ModelRefused(f"no public key to verify it with: ${self.key_env} is not set")
        try:
            key = load_public_key(path)
            manifest = verify_model(files, key, where=f"{self.name} v{version} from the hub")
            if manifest.name != self.name or manifest.version != version:
                raise ModelRefused(f"the hub served {manifest.label} as {self.name} v{version}")
            return load_model(manifest, files.onnx)
        except (ModelVerificationError, ModelLoadError, ValueError, OSError) as exc:
            raise ModelRefused(str(exc)) from exc

    async def run(self) -> None:
        while True:
            try:
                await self.pull_once()
                self.last_error = ""
            except (httpx.HTTPError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                error = str(exc) or type(exc).__name__
                if error != self.last_error:
                    log.warning("cannot check the hub for model %s: %s", self.name, error)
                self.last_error = error
            await asyncio.sleep(self.interval_s)
