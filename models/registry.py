"""A model registry on disk: a directory per model name, a directory per version, a ``latest`` pointer.

::

    <root>/<name>/latest              the latest version's number, as text
    <root>/<name>/<version>/model.onnx
    <root>/<name>/<version>/manifest.json   signed bytes: name, version, feature spec, data range, metrics, sha256
    <root>/<name>/<version>/manifest.sig    ed25519 signature of manifest.json (64 bytes, hex)

The hub publishes (:meth:`Registry.publish` signs with its private key); anyone holding the public
key loads (:meth:`Registry.load` verifies the signature, then the ``.onnx`` hash, and refuses a
tampered file with a :class:`~models.signing.ModelVerificationError` naming what failed). A version
directory is written under a temporary name and renamed into place, so a reader never sees half
of one. The edge imports this (numpy, onnxruntime; no scikit-learn) and verifies through a
``verifier`` (:func:`models.verify_signature.verify_model_in_child`: ``cryptography`` in a child
process) instead of a public key.

Names and versions become paths, so every method checks them before touching the disk: a name must
fit :data:`protocols.validation.NAME_PATTERN` (``grid-risk``; no ``/``, ``..``, NUL, upper case or
look-alike letters), a version is an integer 1..:data:`MAX_VERSION`, and the path they make must
resolve (symbolic links followed) to a directory inside the root; anything else is a
:class:`RegistryError` naming it, and nothing is read or written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from models.manifest import Manifest, decode_manifest, encode_manifest
from models.runtime import Model, load_model
from models.signing import ModelFiles, ModelVerificationError, key_id, sign, verify_model
from protocols.validation import NAME_PATTERN, check_name

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from models.export import ExportedModel

__all__ = ["MAX_VERSION", "NAME_PATTERN", "Registry", "RegistryEntry", "RegistryError", "Verifier", "write_model_files"]

ONNX_FILE, MANIFEST_FILE, SIGNATURE_FILE, LATEST_FILE = "model.onnx", "manifest.json", "manifest.sig", "latest"
MAX_VERSION = 999_999_999
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits, no leading zero: the text of a version


class Verifier(Protocol):
    """Checks a version's files as :func:`models.signing.verify_model` does; returns the manifest."""

    def __call__(self, files: ModelFiles, *, where: str) -> Manifest: ...


class RegistryError(LookupError):
    """No such model or version, or a registry directory that is not laid out as one."""


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    version: int
    latest: bool
    manifest: Manifest | None  # None if manifest.json does not decode
    verified: bool | None  # None: not checked (no public key)
    problem: str = ""  # why it did not verify or decode


def write_model_files(directory: str | Path, files: ModelFiles) -> None:
    """Write the three files of a model version into ``directory`` (created)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / ONNX_FILE).write_bytes(files.onnx)
    (d / MANIFEST_FILE).write_bytes(files.manifest)
    (d / SIGNATURE_FILE).write_text(files.signature.hex() + "\n")


class Registry:
    """Models under ``root``; ``public_key`` (or ``verifier``, which checks with a key of its own)
    verifies what is loaded (one of them is required by :meth:`load`)."""

    def __init__(self, root: str | Path, public_key: Ed25519PublicKey | None = None, *,
                 verifier: Verifier | None = None) -> None:
        self.root = Path(root)
        self.public_key = public_key
        self.verifier = verifier

    # -- reading ----------------------------------------------------------------------------------

    # -- names and versions as paths -------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        """``root/name``, once ``name`` is a model name and the path resolves inside the root."""
        try:
            check_name(name, "model name")
        except ValueError as exc:
            raise RegistryError(f"{self.root}: {exc}") from None
        return self._inside(self.root / name)

    def _version_dir(self, name: str, version: int) -> Path:
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
            raise RegistryError(f"{self.root}: model version {version!r} is not an integer 1..{MAX_VERSION}")
        return self._inside(self._model_dir(name) / str(version))

    def _inside(self, path: Path) -> Path:
        """``path`` (as given) if it resolves, symbolic links followed, to somewhere under the root."""
        root = self.root.resolve()
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise RegistryError(f"{self.root}: {path} resolves to {resolved}, outside the registry")
        return path

    # -- reading ----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Model names present (directories named as models may be; anything else is ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if re.match(NAME_PATTERN, p.name) and p.is_dir())

    def versions(self, name: str) -> list[int]:
        d = self._model_dir(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if _VERSION_DIR.fullmatch(p.name) and p.is_dir())

    def latest(self, name: str) -> int:
        """The version ``latest`` points at; raises :class:`RegistryError` if the model has none."""
        pointer = self._model_dir(name) / LATEST_FILE
        try:
            text = pointer.read_text()[:32].strip()
        except (FileNotFoundError, NotADirectoryError):
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"{self.root}: no model {name!r} (models: {known})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{pointer}: unreadable: {exc}") from None
        if not _VERSION_DIR.fullmatch(text):
            raise RegistryError(f"{pointer}: not a version number 1..{MAX_VERSION}")
        return int(text)

    def read_files(self, name: str, version: int | None = None) -> ModelFiles:
        """The raw files of a version (``latest`` by default), unverified: what the hub ships."""
        version = self.latest(name) if version is None else version
        d = self._version_dir(name, version)
        if not d.is_dir():
            raise RegistryError(f"{self.root}: model {name!r} has no version {version} "
                                f"(versions: {', '.join(map(str, self.versions(name))) or 'none'})")
        onnx, manifest, sig = (self._inside(d / f) for f in (ONNX_FILE, MANIFEST_FILE, SIGNATURE_FILE))
        try:
            signature = bytes.fromhex(sig.read_text().strip())
            return ModelFiles(onnx.read_bytes(), manifest.read_bytes(), signature)
        except FileNotFoundError as exc:
            raise ModelVerificationError(f"{d}: missing {Path(exc.filename).name}") from None
        except ValueError:
            raise ModelVerificationError(f"{d / SIGNATURE_FILE}: not a hex signature") from None

    def verify(self, name: str, version: int | None = None) -> tuple[Manifest, ModelFiles]:
        """Check a version's signature and hash; returns its manifest and files."""
        if self.public_key is None and self.verifier is None:
            raise ModelVerificationError("no public key configured: cannot verify models")
        version = self.latest(name) if version is None else version
        files = self.read_files(name, version)
        where = str(self._version_dir(name, version))
        if self.verifier is not None:
            manifest = self.verifier(files, where=where)
        else:
            manifest = verify_model(files, self.public_key, where=where)
        if manifest.name != name or manifest.version != version:
            raise ModelVerificationError(f"{where}: signed manifest is for {manifest.label}, not {name} v{version} "
                                         f"(files moved between versions)")
        return manifest, files

    def load(self, name: str, version: int | None = None) -> Model:
        """A verified model ready to score (``latest`` by default)."""
        manifest, files = self.verify(name, version)
        return load_model(manifest, files.onnx)

    def entries(self) -> list[RegistryEntry]:
        """Every version of every model, with its manifest and (given a public key) whether it verifies."""
        out = []
        for name in self.names():
            try:
                latest = self.latest(name)
            except RegistryError:
                latest = None
            try:
                versions = self.versions(name)
            except RegistryError:  # a link to outside the registry: not a model of this registry
                continue
            for version in versions:
                manifest, verified, problem = None, None, ""
                try:
                    if self.public_key is not None or self.verifier is not None:
                        manifest, _ = self.verify(name, version)
                        verified = True
                    else:
                        manifest = decode_manifest(self.read_files(name, version).manifest)
                except (ModelVerificationError, RegistryError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    verified, problem = False, str(exc)
                    if manifest is None:
                        try:
                            manifest = decode_manifest((self._version_dir(name, version) / MANIFEST_FILE).read_bytes())
                        except (OSError, RegistryError, msgspec.DecodeError, msgspec.ValidationError):
                            manifest = None
                out.append(RegistryEntry(name, version, version == latest, manifest, verified, problem))
        return out

    # -- writing (the hub) ------------------------------------------------------------------------

    def publish(self, exported: ExportedModel, private_key: Ed25519PrivateKey, *,
                make_latest: bool = True) -> Manifest:
        """Store ``exported`` as the next version of its name, signed; returns the signed manifest."""
        name = exported.manifest.name
        model_dir = self._model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        model_dir = self._inside(model_dir)  # again, now that it exists: it may be a link made meanwhile
        versions = self.versions(name)
        version = (versions[-1] + 1) if versions else 1
        self._version_dir(name, version)
        manifest = msgspec.structs.replace(
            exported.manifest, version=version, key_id=key_id(private_key),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        data = encode_manifest(manifest)
        files = ModelFiles(exported.onnx, data, sign(private_key, data))
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir))
        try:
            write_model_files(tmp, files)
            os.rename(tmp, model_dir / str(version))  # fails if another publisher took the number
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if make_latest:
            self.set_latest(name, version)
        return manifest

    def set_latest(self, name: str, version: int) -> None:
        """Point ``latest`` at ``version`` (a rollback at the hub is this, with an older number)."""
        self._version_dir(name, version)
        if version not in self.versions(name):
            raise RegistryError(f"{self.root}: model {name!r} has no version {version}")
        pointer = self._model_dir(name) / LATEST_FILE
        tmp = pointer.with_name(f".{LATEST_FILE}.tmp")
        tmp.write_text(f"{version}\n")
        os.replace(tmp, pointer)
