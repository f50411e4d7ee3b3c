"""Issue 16, config names: every name pipeline.toml takes is checked at load against the receiving system's
rules (OCI distribution reference grammar, Kubernetes DNS labels, Helm release names): one line, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.errors import ConfigError
from pipeline.core.names import reference_problem, repository_problem
from pipeline.core.paths import ROOT

# The tree's pipeline.toml, with dev's namespace as the cases below name it (a CI test's clone renames it, so that
# its release has a namespace of its own: tests/e2e/test_ci_local.py).
BASE = re.sub(r'(\[environments\.dev\]\n(?:[^\[].*\n|\n)*?)namespace = "[^"]*"', r'\1namespace = "veza-dev"',
              (ROOT / "pipeline.toml").read_text(), count=1)


def load_with(tmp_path: Path, old: str, new: str, count: int = 1) -> Config:
    assert old in BASE, old
    p = tmp_path / "pipeline.toml"
    p.write_text(BASE.replace(old, new, count))
    return load_config(p, check_files=False)


def refused(tmp_path: Path, old: str, new: str, count: int = 1) -> str:
    with pytest.raises(ConfigError) as exc:
        load_with(tmp_path, old, new, count)
    assert exc.value.exit_code == 2
    return exc.value.one_line()


def test_uppercase_repository_is_refused_with_the_fix(tmp_path: Path) -> None:
    line = refused(tmp_path, 'repository = "veza-backend-api"', 'repository = "Veza-Backend-API"')
    assert line == ("pipeline.toml: services[0].repository: 'Veza-Backend-API' has uppercase letters "
                    "(OCI repository names are lowercase) (fix: use 'veza-backend-api')")


@pytest.mark.parametrize(("repo", "ok"), [
    ("veza-backend-api", True), ("veza__api", True), ("veza--api", True), ("team/veza.api", True),
    ("veza_api", True), ("veza.-api", False), ("-api", False), ("api-", False), ("api/", False),
    ("veza___api", False), ("veza api", False), ("veza:api", False), ("a//b", False),
])
def test_repository_grammar(tmp_path: Path, repo: str, ok: bool) -> None:
    assert (repository_problem(repo) is None) is ok
    if not ok:
        assert "services[0].repository" in refused(tmp_path, 'repository = "veza-backend-api"',
                                                   f'repository = "{repo}"')


@pytest.mark.parametrize(("old", "new", "key"), [
    ('namespace = "veza"\nusername_env', 'namespace = "Veza"\nusername_env', "registry.namespace: 'Veza'"),
    ('registry_namespace = "veza-staging"', 'registry_namespace = "veza_"', "registry_namespace: 'veza_'"),
    ('address = "127.0.0.1:5000"', 'address = "myregistry"', "registry.address: 'myregistry' has no '.'"),
    ('\nnamespace = "veza-dev"', '\nnamespace = "veza_dev"', "environments.dev.namespace: 'veza_dev' (a Kubernetes"),
    ('\nnamespace = "veza-dev"', '\nnamespace = "Veza-Dev"', "environments.dev.namespace"),
    ('\nnamespace = "veza-dev"', f'\nnamespace = "{"a" * 64}"', "is 64 characters (at most 63)"),
    ('helm_release = "veza"', 'helm_release = "Veza"', "environments.local.helm_release: 'Veza' is not a valid Helm"),
    ('helm_release = "veza"', f'helm_release = "{"v" * 54}"', "is 54 characters (Helm allows at most 53)"),
    ('helm_release = "veza"', 'helm_release = "veza_1"', "helm_release: 'veza_1'"),
    ('name = "veza-docs"', 'name = "1docs"', "services[3].name: '1docs' (a Kubernetes Service name)"),
    ('name = "veza"\nstate_dir', 'name = "Veza"\nstate_dir', "project.name: 'Veza'"),
    # (no closing quote: the tree's upstream may carry a pin by digest after the tag)
    ('upstream = "golang:1.27-bookworm', 'upstream = "Golang:1.27', "bases.golang.upstream: 'Golang:1.27"),
    ('local = "veza-local/golang:1.27-bookworm"', 'local = "veza-local/golang:1.27+b1"', "invalid tag '1.27+b1'"),
    ('db_repository = "127.0.0.1:5000/trivy/db"', 'db_repository = "127.0.0.1:5000/Trivy/db"',
     "scan.db_repository"),
    ('tag_prefix = "v"', 'tag_prefix = "v "', "versioning.tag_prefix: 'v '"),
    ('tag_prefix = "v"', 'tag_prefix = "rel:"', "versioning.tag_prefix: 'rel:'"),
    ('tag_prefix = "v"', 'tag_prefix = ".v"', "versioning.tag_prefix: '.v'"),
    # Helm accepts these release names, but the chart's object names "<release>-<service>" could not exist
    ('helm_release = "veza"', 'helm_release = "veza.v2"', "object name 'veza.v2-veza-backend-api'"),
    ('helm_release = "veza"', f'helm_release = "{"v" * 53}"', "is 70 characters (at most 63)"),
])
def test_each_name_the_config_takes(tmp_path: Path, old: str, new: str, key: str) -> None:
    line = refused(tmp_path, old, new)
    assert key in line and "(fix: " in line


@pytest.mark.parametrize(("old", "new"), [
    ('\nnamespace = "veza-dev"', f'\nnamespace = "{"a" * 63}"'),
    ('tag_prefix = "v"', 'tag_prefix = "release/"'),
    ('tag_prefix = "v"', 'tag_prefix = ""'),
    ('helm_release = "veza"', 'helm_release = "veza-2"'),
    ('address = "127.0.0.1:5000"', 'address = "Registry.Example.org:443"'),
    ('address = "127.0.0.1:5000"', 'address = "localhost"'),
    ('address = "127.0.0.1:5000"', 'address = "[::1]:5000"'),
])
def test_valid_edge_names_load(tmp_path: Path, old: str, new: str) -> None:
    load_with(tmp_path, old, new)


def test_infra_names_become_service_names(tmp_path: Path) -> None:
    p = tmp_path / "pipeline.toml"
    p.write_text(BASE.replace("[infra.redis]", "[infra.Redis]").replace('"postgres", "redis"]', '"postgres", "Redis"]'))
    with pytest.raises(ConfigError) as exc:
        load_config(p, check_files=False)
    assert exc.value.one_line().startswith("pipeline.toml: infra.Redis: 'Redis' (a Kubernetes Service name)")
    assert exc.value.one_line().endswith("(fix: use 'redis')")


def test_helm_release_rules_alone() -> None:
    from pipeline.core.names import helm_release_problem

    assert helm_release_problem("veza.v2") is None and helm_release_problem("v" * 53) is None
    assert "at most 53" in (helm_release_problem("v" * 54) or "")
    assert helm_release_problem("veza_1") is not None and helm_release_problem("-veza") is not None


def test_chart_object_name_over_63_is_refused(tmp_path: Path) -> None:
    long = "api-" + "x" * 56   # 60 characters: fine alone, 65 once the chart prefixes "veza-"
    line = refused(tmp_path, 'name = "veza-docs"', f'name = "{long}"')
    assert f"gives the Kubernetes object name 'veza-{long}'" in line and "at most 63" in line


def test_image_name_over_255_is_refused(tmp_path: Path) -> None:
    line = refused(tmp_path, 'repository = "veza-docs"', f'repository = "{"/".join(["abcdefghij"] * 23)}"')
    assert "OCI names are at most 255" in line


def test_reference_grammar() -> None:
    assert reference_problem("127.0.0.1:5000/veza/api:sha-1234") is None
    assert reference_problem("golang:1.22-bookworm") is None
    assert reference_problem("localhost/x@sha256:" + "a" * 64) is None
    assert "invalid tag" in (reference_problem("x:" + "t" * 129) or "")
    assert "invalid digest" in (reference_problem("x@sha256:zz") or "")


def test_invoke_refuses_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "pipeline.toml").write_text(BASE.replace('repository = "veza-backend-api"',
                                                         'repository = "Veza-Backend-API"'))
    cp = subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), "-r", str(ROOT), "version", "--json"], cwd=tmp_path,
                        env={**os.environ, "VEZA_ROOT": str(tmp_path)}, capture_output=True, text=True, timeout=60,
                        check=False)
    assert cp.returncode == 2 and "Traceback" not in cp.stderr
    assert "services[0].repository: 'Veza-Backend-API' has uppercase letters" in cp.stderr
