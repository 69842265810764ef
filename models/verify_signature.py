"""Ed25519 checks in a short-lived child process, so the process asking never imports ``cryptography``.

The edge checks a model pulled from the hub (the signature over its manifest, then the ``.onnx``
file's hash) and a remote config (the signature over its TOML) a few times a day at most, and
``cryptography`` would cost it 6.7 MB resident for as long as it runs (docs/edge-footprint.md). So
:func:`verify_model_in_child` and :func:`verify_data_in_child` run ``python -P -m
models.verify_signature`` (this interpreter), hand it the key file's path and the bytes on stdin
(msgpack) and read one answer (JSON) on stdout. The child calls what the hub and the tools call
in-process (:func:`models.signing.load_public_key`, :func:`models.signing.verify_model`), so a
refusal carries the same message, word for word, and the same type: :class:`ModelVerificationError`,
``ValueError`` (a key file that is not an ed25519 PEM), ``OSError`` (one that cannot be read), and
:class:`SignatureRefused` (a ``ValueError``) where ``cryptography`` raises ``InvalidSignature``.

Nothing is accepted unless the child answered that it verified and exited with 0. A child that does
not answer within ``timeout_s`` (it is killed), exits without an answer (a crash), or cannot be
started (the interpreter is missing) is a refusal naming what happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import msgspec

from models.manifest import Manifest, decode_manifest
from models.signing import ModelFiles, ModelVerificationError, load_public_key, verify_model

__all__ = ["CHILD_TIMEOUT_S", "SignatureRefused", "main", "verify_data_in_child", "verify_model_in_child"]

CHILD_TIMEOUT_S = 60.0  # start, import cryptography, hash the model: about 0.2 s; a slow box, a 256 MB model
_MODULE = "models.verify_signature"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # where ``models`` is, for the child to import it


class SignatureRefused(ValueError):
    """A signature that does not verify (the message is ``cryptography``'s, empty), or a check that did not run."""


class _Request(msgspec.Struct, frozen=True):
    kind: Literal["model", "data"]
    key_file: str
    signature: bytes
    signed: bytes  # the manifest's bytes (a model) or the data (a config)
    onnx: bytes = b""  # a model's .onnx file
    where: str = "model"  # names the model in errors


class _Answer(msgspec.Struct, frozen=True):
    ok: bool
    error_type: Literal["", "ModelVerificationError", "ValueError", "OSError", "InvalidSignature"] = ""
    error: str = ""
    os_error: tuple[int, str, str] | None = None  # errno, strerror, filename: the same OSError subclass


def verify_model_in_child(files: ModelFiles, key_file: str | Path, *, where: str = "model",
                          timeout_s: float = CHILD_TIMEOUT_S, python: str = sys.executable) -> Manifest:
    """:func:`models.signing.verify_model` with the public key in ``key_file``, run in a child process.

    Returns the decoded manifest; raises what ``load_public_key`` and ``verify_model`` raise, with
    their messages, and :class:`ModelVerificationError` if the check did not run to an answer.
    """
    answer = _ask(_Request("model", str(key_file), files.signature, files.manifest, files.onnx, where),
                  timeout_s, python)
    if isinstance(answer, str):
        raise ModelVerificationError(f"{where}: not verified: {answer}")
    if not answer.ok:
        raise _error(answer)
    return decode_manifest(files.manifest)  # the bytes the child verified (and decoded)


def verify_data_in_child(key_file: str | Path, signature: bytes, data: bytes, *,
                         timeout_s: float = CHILD_TIMEOUT_S, python: str = sys.executable) -> None:
    """Check a detached ed25519 ``signature`` over ``data`` with the public key in ``key_file``, in a
    child process. Returns if it verifies; raises :class:`SignatureRefused` if not (or if the check did
    not run to an answer), ``ValueError`` or ``OSError`` for a key file that cannot be used."""
    answer = _ask(_Request("data", str(key_file), signature, data), timeout_s, python)
    if isinstance(answer, str):
        raise SignatureRefused(f"not verified: {answer}")
    if not answer.ok:
        raise _error(answer)


def _error(answer: _Answer) -> Exception:
    """The child's refusal as the exception the in-process check raises, with its message."""
    if answer.error_type == "ModelVerificationError":
        return ModelVerificationError(answer.error)
    if answer.error_type == "ValueError":
        return ValueError(answer.error)
    if answer.error_type == "OSError":
        return OSError(*answer.os_error) if answer.os_error else OSError(answer.error)
    if answer.error_type == "InvalidSignature":
        return SignatureRefused(answer.error)
    return SignatureRefused(f"not verified: the signature check answered no without a reason ({answer})")


def _ask(request: _Request, timeout_s: float, python: str) -> _Answer | str:
    """The child's answer to ``request``, or why there is none (a refusal, by the caller)."""
    what = f"the signature check ({python} -m {_MODULE})"
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_PACKAGE_ROOT, path] if path else [_PACKAGE_ROOT])}
    try:
        done = subprocess.run([python, "-P", "-m", _MODULE], input=msgspec.msgpack.encode(request),
                              capture_output=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return f"{what} did not answer within {timeout_s:g} s (it was stopped)"
    except OSError as exc:
        return f"{what} could not be started: {exc.strerror or exc}"
    if done.returncode != 0:
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return f"{what} {how}" + (f": {said[-1][:300]}" if said else " without a word")
    try:
        return msgspec.json.decode(done.stdout, type=_Answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"{what} gave no answer that could be read ({exc}; it wrote {done.stdout[:80]!r})"


def main() -> int:
    """The child: one request on stdin, one answer on stdout, exit status 0 when it answered."""
    from cryptography.exceptions import InvalidSignature

    request = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=_Request)
    try:
        key = load_public_key(request.key_file)
        if request.kind == "model":
            verify_model(ModelFiles(request.onnx, request.signed, request.signature), key, where=request.where)
        else:
            key.verify(request.signature, request.signed)
        answer = _Answer(ok=True)
    except InvalidSignature as exc:
        answer = _Answer(False, "InvalidSignature", str(exc))
    except ModelVerificationError as exc:
        answer = _Answer(False, "ModelVerificationError", str(exc))
    except ValueError as exc:
        answer = _Answer(False, "ValueError", str(exc))
    except OSError as exc:
        detail = (exc.errno, exc.strerror, exc.filename) if exc.errno and exc.strerror and exc.filename else None
        answer = _Answer(False, "OSError", str(exc), detail)
    sys.stdout.buffer.write(msgspec.json.encode(answer))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
