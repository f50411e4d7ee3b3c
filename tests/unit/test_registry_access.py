"""Per-environment registry access (pipeline.toml keys → RegistryAccess → RegistryClients) and the cluster's pull
Secret (deploy/prepare.py, values.py): parsed, defaulted, refused with one line, never printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.errors import ConfigError, UsageError
from pipeline.core.redact import redact
from pipeline.stages.deploy.prepare import pull_credentials, pull_secret_doc
from pipeline.stages.deploy.values import image_values
from pipeline.tools.registry_api import Credentials
from pipeline.tools.registry_clients import RegistryClients, auth_fix, registry_access

BASE = """
[project]
name = "veza"
[registry]
address = "127.0.0.1:5000"
username_env = "REG_USER"
password_env = "REG_PASS"
{registry_extra}
[[services]]
name = "svc-a"
context = "ctx"
dockerfile = "ctx/Dockerfile"
port = 8080
[environments.local]
namespace = "veza-local"
values_file = "v.yaml"
stages = ["build", "push"]
tags = ["sha"]
[environments.dev]
registry = "10.1.2.3:5443"
namespace = "veza-dev"
values_file = "v.yaml"
stages = ["build", "push"]
tags = ["sha"]
{dev_extra}
"""


def _cfg(tmp_path: Path, dev_extra: str = "", registry_extra: str = "") -> Config:
    p = tmp_path / "pipeline.toml"
    p.write_text(BASE.format(dev_extra=dev_extra, registry_extra=registry_extra))
    return load_config(p, check_files=False)


def test_an_environment_names_its_ca_and_push_variables_and_defaults_to_the_registry_table(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 'registry_ca_file = "certs/dev-ca.crt"\nregistry_username_env = "DEV_PUSH_USER"\n'
                         'registry_password_env = "DEV_PUSH_PASSWORD"', 'ca_file = "/etc/ssl/embedded-ca.pem"')
    dev, local = cfg.env("dev").registry_access, cfg.env("local").registry_access
    assert (dev.address, dev.ca_file, dev.username_env, dev.password_env) == (
        "10.1.2.3:5443", tmp_path / "certs/dev-ca.crt", "DEV_PUSH_USER", "DEV_PUSH_PASSWORD")
    assert (local.ca_file, local.username_env, local.password_env) == (
        Path("/etc/ssl/embedded-ca.pem"), "REG_USER", "REG_PASS")
    assert dev.where() == "environment dev: registry 10.1.2.3:5443"
    # [registry] ca_file belongs to [registry] address: another address does not inherit it
    assert _cfg(tmp_path, "", 'ca_file = "/etc/ssl/embedded-ca.pem"').env("dev").registry_ca_file is None


def test_the_clients_take_ca_and_credentials_from_the_environment_of_the_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.setenv("DEV_PUSH_USER", "ci-dev")
    monkeypatch.setenv("DEV_PUSH_PASSWORD", "dev-push-s3cret")
    cfg = _cfg(tmp_path, 'registry_ca_file = "/ci/ca.crt"\nregistry_username_env = "DEV_PUSH_USER"\n'
                         'registry_password_env = "DEV_PUSH_PASSWORD"')
    for pool in (RegistryClients(cfg, cfg.env("dev")), RegistryClients(cfg)):   # without env: found by address
        client = pool.client("10.1.2.3:5443")
        assert client.credentials == Credentials("ci-dev", "dev-push-s3cret")
        assert client._cafile == Path("/ci/ca.crt") and client.where == "environment dev: registry 10.1.2.3:5443"
    embedded = RegistryClients(cfg).client("127.0.0.1:5000")
    assert embedded.credentials is None and embedded._cafile is None   # REG_USER/REG_PASS unset: anonymous
    assert registry_access(cfg, "192.0.2.9:5000").environment == ""   # an address no environment names


def test_half_set_push_variables_name_the_environment_and_the_missing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEV_PUSH_USER", "ci-dev")
    monkeypatch.delenv("DEV_PUSH_PASSWORD", raising=False)
    cfg = _cfg(tmp_path, 'registry_username_env = "DEV_PUSH_USER"\nregistry_password_env = "DEV_PUSH_PASSWORD"')
    with pytest.raises(UsageError) as got:
        RegistryClients(cfg, cfg.env("dev")).client("10.1.2.3:5443")
    assert got.value.exit_code == 2
    assert got.value.message.startswith("environment dev: registry 10.1.2.3:5443: ")
    assert "DEV_PUSH_PASSWORD is not set" in got.value.message


def test_the_fix_of_a_refused_credential_names_the_unset_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REG_USER", raising=False)
    monkeypatch.setenv("REG_PASS", "x")
    fix = auth_fix(_cfg(tmp_path).env("dev").registry_access)
    assert "REG_USER/REG_PASS" in fix and "(REG_USER not set)" in fix


@pytest.mark.parametrize(("extra", "key"), [
    ('registry_username_env = "not a name"', "environments.dev.registry_username_env"),
    ('pull_username_env = "PULL_USER"', "environments.dev.pull_password_env"),
    ('pull_secret = "registry-secret"', "environments.dev.pull_secret"),
    ('pull_secret = "Registry_Secret"\npull_username_env = "U"\npull_password_env = "P"',
     "environments.dev.pull_secret"),
    ('registry_password = "hunter2"', "environments.dev.registry_password"),
])
def test_bad_registry_keys_are_one_line_naming_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as got:
        _cfg(tmp_path, extra)
    assert f"pipeline.toml: {key}:" in got.value.message and "\n" not in got.value.one_line()


def test_the_pull_secret_defaults_to_registry_secret_and_is_rendered_by_name_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, 'pull_username_env = "DEV_PULL_USER"\npull_password_env = "DEV_PULL_PASSWORD"')
    dev = cfg.env("dev")
    assert dev.pull_secret == "registry-secret" and cfg.env("local").pull_secret == ""
    values = image_values(cfg, {}, "sha256:" + "0" * 64, dev.pull_secret)
    assert values["global"]["imagePullSecrets"] == [{"name": "registry-secret"}]
    assert "imagePullSecrets" not in image_values(cfg, {}, "", "")["global"]   # none: the chart's own list

    monkeypatch.delenv("DEV_PULL_USER", raising=False)
    monkeypatch.setenv("DEV_PULL_PASSWORD", "pull-s3cret-value")
    with pytest.raises(UsageError) as got:
        pull_credentials(dev)
    assert got.value.exit_code == 2 and "environment dev: registry 10.1.2.3:5443" in got.value.message
    assert "DEV_PULL_USER not set" in got.value.message and "pull-s3cret-value" not in got.value.one_line()

    monkeypatch.setenv("DEV_PULL_USER", "puller")
    creds = pull_credentials(dev)
    assert creds == Credentials("puller", "pull-s3cret-value")
    doc = pull_secret_doc(dev.pull_secret, dev.registry, creds)
    assert doc["type"] == "kubernetes.io/dockerconfigjson" and doc["metadata"]["name"] == "registry-secret"
    encoded = doc["data"][".dockerconfigjson"]
    auths = json.loads(base64.b64decode(encoded))["auths"]
    assert auths["10.1.2.3:5443"]["auth"] == base64.b64encode(b"puller:pull-s3cret-value").decode()
    assert "pull-s3cret-value" not in redact(f"{encoded} {creds.password}")   # never printed


def test_the_ca_file_may_come_from_a_ci_file_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEV_REGISTRY_CA", "/builds/tmp/DEV_REGISTRY_CA")
    cfg = _cfg(tmp_path, 'registry_ca_file = "${DEV_REGISTRY_CA}"')
    assert cfg.env("dev").registry_ca_file == Path("/builds/tmp/DEV_REGISTRY_CA")
    monkeypatch.delenv("DEV_REGISTRY_CA")
    unset = _cfg(tmp_path, 'registry_ca_file = "${DEV_REGISTRY_CA}"').env("dev").registry_ca_file
    assert "DEV_REGISTRY_CA" in str(unset)   # the error about the missing file names the variable


def test_the_deploy_preflight_stops_on_an_unset_pull_variable_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from pipeline.stages.rollout import DeployStage

    monkeypatch.delenv("DEV_PULL_USER", raising=False)
    monkeypatch.delenv("DEV_PULL_PASSWORD", raising=False)
    cfg = _cfg(tmp_path, 'pull_username_env = "DEV_PULL_USER"\npull_password_env = "DEV_PULL_PASSWORD"')
    with pytest.raises(UsageError) as got:   # raised before the cluster is asked (the stub has nothing else)
        DeployStage().preflight(cast(Any, SimpleNamespace(env=cfg.env("dev"))))
    assert got.value.exit_code == 2 and "DEV_PULL_USER and DEV_PULL_PASSWORD not set" in got.value.message
