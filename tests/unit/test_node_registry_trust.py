"""The local node's trust of an environment's registry CA (pipeline/local/cluster/registry_trust.py), on files only:
certs.d and the record are moved under tmp_path (the real ones are the engine's; the cluster tests use them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import UsageError
from pipeline.core.paths import ROOT
from pipeline.local.cluster import registry_trust

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(registry_trust, "CERTS_D", tmp_path / "certs.d")
    monkeypatch.setattr(registry_trust, "TRUST_RECORD", tmp_path / "state" / "registry-trust.json")
    ca = tmp_path / "ca.crt"
    ca.write_text(PEM)
    env = load_config(ROOT / "pipeline.toml", check_files=False).env("dev")
    return dataclasses.replace(env, registry="10.77.0.2:19210", registry_ca_file=ca)


def test_the_node_trusts_the_environments_ca_beside_anothers_and_forgets_only_its_own(dev, tmp_path: Path) -> None:
    other = tmp_path / "certs.d" / dev.registry / "ca.crt"
    other.parent.mkdir(parents=True)
    other.write_text("someone else's")
    written = registry_trust.node_trusts(dev)
    assert written == tmp_path / "certs.d" / "10.77.0.2:19210" / "veza-dev.crt"
    assert written.read_text() == PEM and other.read_text() == "someone else's"
    assert registry_trust.node_trusts(dev) == written   # idempotent
    assert registry_trust.forget_all() == [str(written)]
    assert not written.exists() and other.exists()
    assert registry_trust.forget_all() == []


def test_no_ca_writes_nothing_and_a_bad_ca_is_one_line_naming_env_registry_and_file(dev, tmp_path: Path) -> None:
    assert registry_trust.node_trusts(dataclasses.replace(dev, registry_ca_file=None)) is None
    assert not (tmp_path / "certs.d").exists()
    for bad in (tmp_path / "missing.crt", tmp_path / "not-pem.crt"):
        if bad.name == "not-pem.crt":
            bad.write_text("hello")
        with pytest.raises(UsageError) as err:
            registry_trust.node_trusts(dataclasses.replace(dev, registry_ca_file=bad))
        msg = err.value.message
        assert "environment dev" in msg and "10.77.0.2:19210" in msg and str(bad) in msg and "\n" not in msg
        assert err.value.exit_code == 2
    assert not (tmp_path / "certs.d").exists()


def test_forget_removes_the_directory_it_made_and_the_record(dev, tmp_path: Path) -> None:
    written = registry_trust.node_trusts(dev)
    assert written is not None
    registry_trust.forget("dev", dev.registry)
    assert not written.parent.exists() and not registry_trust.TRUST_RECORD.exists()
