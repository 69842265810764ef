"""The signed registry: publish, list, load; tampered, mis-signed or misplaced files are refused by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.manifest import decode_manifest
from models.registry import Registry, RegistryError
from models.signing import ModelVerificationError, generate_keypair, key_id, load_private_key, load_public_key


@pytest.fixture
def registry(tmp_path: Path, keys, exported_models: dict) -> Registry:
    reg = Registry(tmp_path / "registry", keys.public)
    reg.publish(exported_models["isolation_forest"], keys.private)
    reg.publish(exported_models["mahalanobis"], keys.private)
    return reg


def test_publish_assigns_versions_and_latest(registry: Registry, keys, exported_models: dict) -> None:
    name = exported_models["isolation_forest"].manifest.name
    second = registry.publish(exported_models["isolation_forest"], keys.private)
    assert second.version == 2 and second.key_id == key_id(keys.public)
    assert registry.versions(name) == [1, 2] and registry.latest(name) == 2
    assert registry.load(name).manifest.version == 2
    assert registry.load(name, 1).manifest.version == 1
    registry.set_latest(name, 1)
    assert registry.load(name).manifest.version == 1
    assert set(registry.names()) == {name, exported_models["mahalanobis"].manifest.name}


def test_loaded_model_scores(registry: Registry, exported_models: dict, trained_models: dict) -> None:
    model = registry.load(exported_models["isolation_forest"].manifest.name)
    rows = trained_models["isolation_forest"].holdout
    np.testing.assert_allclose(model.raw_scores(rows), trained_models["isolation_forest"].raw_scores(rows), atol=1e-5)


def _version_dir(registry: Registry, exported_models: dict) -> Path:
    return registry.root / exported_models["isolation_forest"].manifest.name / "1"


def test_tampered_onnx_is_refused(registry: Registry, exported_models: dict) -> None:
    path = _version_dir(registry, exported_models) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, deep inside a tree's thresholds
    path.write_bytes(bytes(data))
    with pytest.raises(ModelVerificationError, match=r"model\.onnx does not match its signed manifest: sha256"):
        registry.load(exported_models["isolation_forest"].manifest.name)


def test_tampered_manifest_is_refused(registry: Registry, exported_models: dict) -> None:
    path = _version_dir(registry, exported_models) / "manifest.json"
    m = decode_manifest(path.read_bytes())
    # raise the alarm threshold so the model never alarms: still a valid manifest, but not the signed one
    forged = msgspec.structs.replace(m, calibration=msgspec.structs.replace(m.calibration, alarm_surprise=99.0))
    path.write_bytes(msgspec.json.encode(forged))
    with pytest.raises(ModelVerificationError, match=r"manifest\.json signature does not verify"):
        registry.load(m.name)


def test_another_key_is_refused(registry: Registry, exported_models: dict, tmp_path: Path) -> None:
    stranger = Registry(registry.root, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ModelVerificationError, match="signature does not verify with public key"):
        stranger.load(exported_models["isolation_forest"].manifest.name)
    # a model signed by another key, dropped into the registry, is refused too
    forged = Registry(tmp_path / "forged", None)
    forged.publish(exported_models["isolation_forest"], Ed25519PrivateKey.generate())
    with pytest.raises(ModelVerificationError, match="does not verify"):
        Registry(forged.root, registry.public_key).load(exported_models["isolation_forest"].manifest.name)


def test_a_version_moved_to_another_number_is_refused(registry: Registry, keys, exported_models: dict) -> None:
    name = exported_models["isolation_forest"].manifest.name
    registry.publish(exported_models["isolation_forest"], keys.private)
    one, two = registry.root / name / "1", registry.root / name / "2"
    (two / "manifest.json").write_bytes((one / "manifest.json").read_bytes())
    (two / "manifest.sig").write_bytes((one / "manifest.sig").read_bytes())
    with pytest.raises(ModelVerificationError, match="signed manifest is for .* v1, not .* v2"):
        registry.load(name, 2)


def test_missing_files_and_unknown_names_say_what(registry: Registry, exported_models: dict) -> None:
    name = exported_models["isolation_forest"].manifest.name
    (_version_dir(registry, exported_models) / "manifest.sig").unlink()
    with pytest.raises(ModelVerificationError, match="missing manifest.sig"):
        registry.load(name)
    with pytest.raises(RegistryError, match="no model 'nope'"):
        registry.load("nope")
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.load(name, 9)
    with pytest.raises(ModelVerificationError, match="no public key"):
        Registry(registry.root).load(name)


def test_entries_report_each_version(registry: Registry, exported_models: dict) -> None:
    path = _version_dir(registry, exported_models) / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    entries = {e.name: e for e in registry.entries()}
    bad = entries[exported_models["isolation_forest"].manifest.name]
    good = entries[exported_models["mahalanobis"].manifest.name]
    assert good.verified is True and good.latest and good.manifest is not None
    assert bad.verified is False and "model.onnx" in bad.problem and bad.manifest is not None
    assert all(e.verified is None for e in Registry(registry.root).entries())


def test_keys_round_trip_through_pem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_pem, public_pem = generate_keypair()
    (tmp_path / "k.pem").write_bytes(private_pem)
    (tmp_path / "p.pem").write_bytes(public_pem)
    private = load_private_key(tmp_path / "k.pem")
    assert key_id(private) == key_id(load_public_key(tmp_path / "p.pem"))
    monkeypatch.setenv("SENTINEL_MODEL_SIGNING_KEY", private_pem.decode())
    assert key_id(load_private_key()) == key_id(private)
    monkeypatch.delenv("SENTINEL_MODEL_SIGNING_KEY")
    with pytest.raises(ValueError, match="no signing key"):
        load_private_key()
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_private_key(tmp_path / "p.pem")


# -- names and versions that would become paths outside the registry --------------------------------

HOSTILE_NAMES = ["../../escaped", "../escaped", "..", ".", "/tmp/abs", "a/b", "a\\b", "a\x00b", "gr\u0456d-risk",
                 "GRID", "grid risk", "grid\n", "-grid", ".hidden", "a..b", "x" * 65, ""]


def _files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")} if path.exists() else set()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_model_names_are_refused_and_nothing_is_written(tmp_path: Path, keys, exported_models: dict,
                                                                name: str) -> None:
    root = tmp_path / "deep" / "er" / "registry"
    reg = Registry(root, keys.public)
    reg.publish(exported_models["isolation_forest"], keys.private)
    before = _files_under(tmp_path)
    exported = exported_models["mahalanobis"]
    hostile = dataclasses.replace(exported, manifest=msgspec.structs.replace(exported.manifest, name=name))
    with pytest.raises(RegistryError, match="model name .* is not allowed"):
        reg.publish(hostile, keys.private)
    for call in (lambda: reg.versions(name), lambda: reg.latest(name), lambda: reg.read_files(name, 1),
                 lambda: reg.load(name), lambda: reg.set_latest(name, 1)):
        with pytest.raises(RegistryError, match="is not allowed"):
            call()
    assert _files_under(tmp_path) == before  # nothing written anywhere, in or outside the registry


def test_the_name_pattern_is_strict(tmp_path: Path) -> None:
    from protocols.validation import check_name

    for good in ("grid-risk", "grid-anomaly", "tr-oil-if", "feeder_v2", "x.1", "a" * 64, "0"):
        assert check_name(good) == good
    for bad in HOSTILE_NAMES:
        with pytest.raises(ValueError, match="is not allowed"):
            check_name(bad)


@pytest.mark.parametrize("version", [0, -1, 10**12, True, "1", 1.0])
def test_versions_out_of_bounds_are_refused(registry: Registry, exported_models: dict, version: object) -> None:
    name = exported_models["isolation_forest"].manifest.name
    with pytest.raises(RegistryError, match="not an integer 1..999999999"):
        registry.read_files(name, version)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="not an integer"):
        registry.set_latest(name, version)  # type: ignore[arg-type]


def test_a_latest_pointer_out_of_bounds_is_refused(registry: Registry, exported_models: dict) -> None:
    name = exported_models["isolation_forest"].manifest.name
    for text in ("99999999999999999999\n", "-1\n", "../1\n", "\u0661\n"):  # U+0661: an Arabic-Indic one
        (registry.root / name / "latest").write_text(text)
        with pytest.raises(RegistryError, match="not a version number"):
            registry.load(name)


def test_a_link_out_of_the_registry_is_refused(registry: Registry, keys, exported_models: dict, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (registry.root / "linked").symlink_to(outside, target_is_directory=True)
    exported = exported_models["mahalanobis"]
    linked = dataclasses.replace(exported, manifest=msgspec.structs.replace(exported.manifest, name="linked"))
    with pytest.raises(RegistryError, match="outside the registry"):
        registry.publish(linked, keys.private)
    assert list(outside.iterdir()) == []
    # a version directory that links out is not served either
    name = exported_models["isolation_forest"].manifest.name
    (outside / "model.onnx").write_bytes(b"secret")
    (registry.root / name / "7").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError, match="outside the registry"):
        registry.read_files(name, 7)
    # the listing skips what links out rather than failing
    assert "linked" not in {e.name for e in registry.entries()}
