"""Signatures checked in a child process (models/verify_signature.py), as the edge checks them: the
same answers as the in-process check, word for word, and a child that does not answer, crashes or
cannot start is a refusal naming what happened, never an accepted model or config."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import msgspec
import pytest

from models.manifest import decode_manifest
from models.registry import Registry
from models.signing import ModelFiles, ModelVerificationError, generate_keypair, public_pem, verify_model
from models.verify_signature import SignatureRefused, verify_data_in_child, verify_model_in_child


@pytest.fixture
def signed(tmp_path: Path, keys, exported_models: dict) -> tuple[ModelFiles, Path]:
    """A published model's files and the public key's file."""
    reg = Registry(tmp_path / "registry")
    manifest = reg.publish(exported_models["mahalanobis"], keys.private)
    key_file = tmp_path / "model.pub"
    key_file.write_bytes(public_pem(keys.public))
    return reg.read_files(manifest.name, manifest.version), key_file


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)


def test_a_model_that_verifies_gives_the_manifest_the_in_process_check_gives(signed, keys) -> None:
    files, key_file = signed
    assert verify_model_in_child(files, key_file, where="here") == verify_model(files, keys.public, where="here")


def _forged_manifest(files: ModelFiles) -> ModelFiles:
    m = decode_manifest(files.manifest)
    return dataclasses.replace(files, manifest=msgspec.json.encode(msgspec.structs.replace(m, onnx_bytes=1)))


@pytest.mark.parametrize("tamper", [
    lambda files, key_file: (dataclasses.replace(files, onnx=_flip(files.onnx)), key_file),
    lambda files, key_file: (dataclasses.replace(files, onnx=files.onnx[:-10]), key_file),
    lambda files, key_file: (_forged_manifest(files), key_file),
    lambda files, key_file: (dataclasses.replace(files, signature=_flip(files.signature)), key_file),
    lambda files, key_file: (dataclasses.replace(files, signature=b"short"), key_file),
    lambda files, key_file: (files, _write(key_file.with_name("other.pub"), generate_keypair()[1])),
    lambda files, key_file: (files, _write(key_file.with_name("private.pem"), generate_keypair()[0])),
    lambda files, key_file: (files, _write(key_file.with_name("junk.pub"), b"not a key")),
    lambda files, key_file: (files, key_file.with_name("missing.pub")),
], ids=["onnx-bit", "onnx-truncated", "manifest", "signature", "short-signature", "another-key",
        "a-private-key", "junk-key-file", "missing-key-file"])
def test_a_refusal_is_the_in_process_refusal_word_for_word(signed, tamper) -> None:
    from models.signing import load_public_key

    files, key_file = tamper(*signed)
    with pytest.raises(Exception) as in_process:  # noqa: PT011 - compared below
        verify_model(files, load_public_key(key_file), where="feeder v2 from the hub")
    with pytest.raises(type(in_process.value)) as in_child:
        verify_model_in_child(files, key_file, where="feeder v2 from the hub")
    assert str(in_child.value) == str(in_process.value)
    assert isinstance(in_child.value, (ModelVerificationError, ValueError, OSError))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _interpreter(tmp_path: Path, script: str) -> str:
    """A program standing in for the Python interpreter the child runs on."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(("script", "timeout_s", "expected"), [
    ("sleep 30", 0.5, r"did not answer within 0\.5 s \(it was stopped\)"),
    ("echo 'Traceback: boom' >&2; exit 3", 30, r"exited with 3: Traceback: boom"),
    ("kill -9 $$", 30, r"was killed by signal 9"),
    ("cat >/dev/null; printf '{\"ok\": true}'; exit 1", 30, r"exited with 1 without a word"),
    ("cat >/dev/null; printf 'ok'", 30, r"gave no answer that could be read"),
    ("cat >/dev/null; printf '{\"ok\": \"yes\"}'", 30, r"gave no answer that could be read"),
    (None, 30, r"could not be started: No such file or directory"),
], ids=["hangs", "crashes", "killed", "says-ok-but-fails", "garbage", "not-a-boolean", "no-interpreter"])
def test_a_child_that_does_not_answer_is_a_refusal(signed, tmp_path: Path, script: str | None, timeout_s: float,
                                                   expected: str) -> None:
    files, key_file = signed
    python = _interpreter(tmp_path, script) if script else str(tmp_path / "no" / "python3")
    with pytest.raises(ModelVerificationError, match=r"^feeder v2: not verified: the signature check \(.*python3? "
                                                     r"-m models\.verify_signature\) " + expected):
        verify_model_in_child(files, key_file, where="feeder v2", timeout_s=timeout_s, python=python)
    with pytest.raises(SignatureRefused, match=r"^not verified: the signature check .*" + expected):
        verify_data_in_child(key_file, files.signature, files.manifest, timeout_s=timeout_s, python=python)


def test_signed_data_verifies_and_altered_data_is_refused(signed, keys, tmp_path: Path) -> None:
    _, key_file = signed
    data = b'[identity]\nedge_id = "edge-1"\n'
    signature = keys.private.sign(data)
    verify_data_in_child(key_file, signature, data)
    with pytest.raises(SignatureRefused) as refused:
        verify_data_in_child(key_file, signature, data.replace(b"1", b"2"))
    assert str(refused.value) == ""  # as cryptography's InvalidSignature: the caller says what it means
    with pytest.raises(ValueError, match=r"junk\.pub: not a PEM public key"):
        verify_data_in_child(_write(tmp_path / "junk.pub", b"junk"), signature, data)
    with pytest.raises(OSError, match=r"No such file or directory: '.*missing\.pub'"):
        verify_data_in_child(tmp_path / "missing.pub", signature, data)


def test_the_child_finds_the_models_package_from_anywhere(signed, tmp_path: Path, monkeypatch) -> None:
    """The edge may run from any directory, with or without PYTHONPATH: the child still imports our
    ``models`` (and not a ``models`` directory where it happens to run)."""
    files, key_file = signed
    decoy = tmp_path / "elsewhere" / "models"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the wrong models package')\n")
    monkeypatch.chdir(decoy.parent)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert verify_model_in_child(files, key_file).name == decode_manifest(files.manifest).name
    monkeypatch.setenv("PYTHONPATH", str(decoy.parent) + os.pathsep + "/nonexistent")
    assert verify_model_in_child(files, key_file).name == decode_manifest(files.manifest).name
