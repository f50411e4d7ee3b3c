"""Which cluster an environment deploys to: kubeconfig_env, KUBECONFIG, ~/.kube/config, or the pipeline's own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import Environment, load_config
from pipeline.core.errors import ConfigError, UsageError
from pipeline.core.kubeconfig import ClusterAccess, check_access, resolve_cluster

ROOT = Path(__file__).resolve().parents[2]
LOCAL = Path("/var/lib/veza-pipeline/local/cluster/kubeconfig")


@pytest.fixture(scope="module")
def prod() -> Environment:
    return load_config(ROOT / "pipeline.toml", check_files=False).env("prod")


def _kubeconfig(path: Path, *contexts: str, current: str = "") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in contexts]}))
    return path


def test_every_shipped_environment_names_a_kubeconfig_variable_for_ci() -> None:
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    assert {e.name: e.kubeconfig_env for e in cfg.environments.values() if e.name != "local"} == {
        "dev": "VEZA_DEV_KUBECONFIG", "staging": "VEZA_STAGING_KUBECONFIG", "prod": "VEZA_PROD_KUBECONFIG"}


def test_without_the_variable_or_a_context_it_is_the_pipelines_own_cluster(prod: Environment) -> None:
    access = resolve_cluster(prod, LOCAL, {"KUBECONFIG": "/elsewhere"})
    assert access == ClusterAccess(LOCAL, "", False, "the pipeline's own cluster")
    check_access(access)  # the own cluster is never checked here


def test_the_variable_named_in_pipeline_toml_makes_it_external(prod: Environment, tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "kc", "ci-prod", current="ci-prod")
    access = resolve_cluster(prod, LOCAL, {"VEZA_PROD_KUBECONFIG": str(kc), "KUBECONFIG": "/other"})
    assert access.external and access.kubeconfig == kc and access.context == ""
    assert access.source == "$VEZA_PROD_KUBECONFIG"
    check_access(access)
    assert "current context" in access.describe()


def test_a_kube_context_without_the_variable_reads_kubeconfig_then_home(prod: Environment) -> None:
    env = dataclasses.replace(prod, kube_context="team-prod")
    a = resolve_cluster(env, LOCAL, {"KUBECONFIG": "/a/kc:/b/kc"})
    assert (a.kubeconfig, a.context, a.external, a.source) == (Path("/a/kc"), "team-prod", True, "KUBECONFIG")
    b = resolve_cluster(env, LOCAL, {"HOME": "/home/u"})
    assert b.kubeconfig == Path("/home/u/.kube/config") and b.external


def test_a_missing_context_is_refused_with_one_line(prod: Environment, tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "kc", "one", "two", current="one")
    env = dataclasses.replace(prod, kube_context="three")
    with pytest.raises(UsageError) as exc:
        check_access(resolve_cluster(env, LOCAL, {"VEZA_PROD_KUBECONFIG": str(kc)}))
    assert "kube context 'three' not found" in exc.value.message and "one, two" in exc.value.message
    assert exc.value.exit_code == 2 and "\n" not in exc.value.one_line()


def test_no_context_and_no_current_context_is_refused(prod: Environment, tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "kc", "one")
    with pytest.raises(UsageError, match="no current-context"):
        check_access(resolve_cluster(prod, LOCAL, {"VEZA_PROD_KUBECONFIG": str(kc)}))


def test_an_unreadable_kubeconfig_is_refused_naming_the_variable(prod: Environment, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as exc:
        check_access(resolve_cluster(prod, LOCAL, {"VEZA_PROD_KUBECONFIG": str(tmp_path / "missing")}))
    assert "$VEZA_PROD_KUBECONFIG" in exc.value.message and "token" not in exc.value.one_line()


def test_a_bad_variable_name_is_a_config_error(tmp_path: Path) -> None:
    text = (ROOT / "pipeline.toml").read_text().replace(
        'kubeconfig_env = "VEZA_PROD_KUBECONFIG"', 'kubeconfig_env = "1 bad-name"')
    (tmp_path / "pipeline.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"environments\.prod\.kubeconfig_env"):
        load_config(tmp_path / "pipeline.toml", check_files=False)
