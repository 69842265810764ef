"""ed25519 signing of model manifests (the hub) and their verification (the edge), with ``cryptography``.

The signature covers the manifest's exact bytes; the manifest names the ``.onnx`` file's sha256.
:func:`verify_model` checks both and raises :class:`ModelVerificationError` naming what failed.

``cryptography`` is imported by the functions that use it, not with this module: the edge imports
this module for :class:`ModelFiles` and :class:`ModelVerificationError` and verifies in a short-lived
child process (:mod:`models.verify_signature`, which calls :func:`verify_model`), so it never holds
``cryptography``'s 6.7 MB (docs/edge-footprint.md). The hub and the tools verify in-process.

Keys: the private key is a PKCS#8 PEM (``sentinel models keygen`` writes one, mode 0600) or, from
an environment variable, the PEM text itself; the public key a SubjectPublicKeyInfo PEM.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from models.manifest import Manifest, decode_manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PRIVATE_KEY_ENV", "PUBLIC_KEY_ENV", "ModelFiles", "ModelVerificationError", "generate_keypair", "key_id",
    "load_private_key", "load_public_key", "sign", "verify_model",
]

PRIVATE_KEY_ENV = "SENTINEL_MODEL_SIGNING_KEY"  # the private key's PEM text (hub)
PUBLIC_KEY_ENV = "SENTINEL_MODEL_PUBLIC_KEY"  # a path to the public key's PEM (edge, CLI)


class ModelVerificationError(Exception):
    """A model's files do not verify: says which model, which file and what failed."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The three files of one model version, as bytes: what the hub ships and the edge checks."""

    onnx: bytes
    manifest: bytes  # manifest.json, exactly as signed
    signature: bytes  # raw 64-byte ed25519 signature over ``manifest``


def generate_keypair() -> tuple[bytes, bytes]:
    """A new ed25519 key pair as ``(private PEM, public PEM)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    return private_pem, public_pem(private.public_key())


def public_pem(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names a key in manifests and errors."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path | None = None) -> Ed25519PrivateKey:
    """The signing key from a PEM file, or (no path) from ``$SENTINEL_MODEL_SIGNING_KEY`` (PEM text)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path is not None:
        data, where = Path(path).read_bytes(), str(path)
    else:
        text = os.environ.get(PRIVATE_KEY_ENV)
        if not text:
            raise ValueError(f"no signing key: pass --signing-key FILE or set ${PRIVATE_KEY_ENV} to the PEM text")
        data, where = text.encode(), f"${PRIVATE_KEY_ENV}"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{where}: not an ed25519 key")
    return key


def load_public_key(path: str | Path | None = None) -> Ed25519PublicKey:
    """The verification key from a PEM file, or (no path) from the file ``$SENTINEL_MODEL_PUBLIC_KEY`` names."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if path is None:
        path = os.environ.get(PUBLIC_KEY_ENV)
        if not path:
            raise ValueError(f"no public key to verify models with: pass --public-key FILE or set ${PUBLIC_KEY_ENV}")
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an ed25519 public key")
    return key


def sign(private_key: Ed25519PrivateKey, manifest_bytes: bytes) -> bytes:
    return private_key.sign(manifest_bytes)


def verify_model(files: ModelFiles, public_key: Ed25519PublicKey, *, where: str = "model") -> Manifest:
    """Check the signature over the manifest, then the ``.onnx`` file's size and sha256 against it.

    Returns the decoded manifest; raises :class:`ModelVerificationError` naming what failed.
    """
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(files.signature, files.manifest)
    except InvalidSignature:
        raise ModelVerificationError(
            f"{where}: manifest.json signature does not verify with public key {key_id(public_key)} "
            f"(the manifest was altered, or signed by another key)") from None
    try:
        manifest = decode_manifest(files.manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ModelVerificationError(f"{where}: manifest.json is signed but does not decode: {exc}") from exc
    where = f"{where} ({manifest.label})"
    digest = hashlib.sha256(files.onnx).hexdigest()
    if digest != manifest.sha256 or len(files.onnx) != manifest.onnx_bytes:
        raise ModelVerificationError(
            f"{where}: model.onnx does not match its signed manifest: sha256 {digest[:16]}..., "
            f"{len(files.onnx)} bytes; manifest says {manifest.sha256[:16]}..., {manifest.onnx_bytes} bytes "
            f"(the model file was altered or truncated)")
    return manifest
