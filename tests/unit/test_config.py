"""pipeline.toml: the valid file loads into typed objects; every malformed variant gives one exact line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.stage_registry import listable

VALID = """
[project]
name = "veza"

[registry]
address = "127.0.0.1:5000"
namespace = "veza"
password_env = "REG_PW"

[bases.golang]
upstream = "golang:1.22-bookworm"
local = "veza-local/golang:bookworm"
recipe = "golang"
build_arg = "GO_IMAGE"

[bases.postgres]
upstream = "postgres:15-alpine"
local = "veza-local/postgres:15"
recipe = "postgres"

[[services]]
name = "api"
context = "svc/api"
dockerfile = "df/api.Dockerfile"
port = 8080
depends_on = ["postgres"]
bases = ["golang"]
probes = [{ method = "GET", path = "/health", status = 200, body_contains = "ok" }]

[[services]]
name = "docs"
context = "svc/docs"
dockerfile = "df/docs.Dockerfile"
port = 8083

[infra.postgres]
base = "postgres"
port = 5432

[environments.dev]
namespace = "veza-dev"
values_file = "helm/values-dev.yaml"
stages = ["build", "scan", "push", "sign", "verify-images", "deploy"]
tags = ["sha", "branch"]

[environments.prod]
namespace = "veza-prod"
values_file = "helm/values-prod.yaml"
stages = ["build", "scan", "smoke", "push", "verify-images", "deploy", "verify"]
trusted_keys = ["keys/release.pub"]   # verifies what another key signed
tags = ["semver"]
scan_threshold = "HIGH"
require_clean_tree = true
"""

DEV_STAGES = 'stages = ["build", "scan", "push", "sign", "verify-images", "deploy"]'   # dev's stages in VALID


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for d in ("svc/api", "svc/docs", "df"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "df/api.Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "df/docs.Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pipeline.toml").write_text(VALID)
    return tmp_path


def _load(project: Path, text: str) -> ConfigError:
    (project / "pipeline.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(project / "pipeline.toml")
    return info.value


def test_valid_config_loads_typed_and_immutable(project: Path) -> None:
    cfg = load_config(project / "pipeline.toml")
    assert [s.name for s in cfg.services] == ["api", "docs"]
    api = cfg.service("api")
    assert api.port == 8080 and api.depends_on == ("postgres",) and api.probes[0].status == 200
    assert cfg.env("prod").scan_threshold == "HIGH" and cfg.env("prod").require_clean_tree
    assert cfg.env("dev").repository(api) == "127.0.0.1:5000/veza/api"
    with pytest.raises(FrozenInstanceError):
        api.port = 1  # type: ignore[misc]


def test_project_config_loads() -> None:
    cfg = load_config(check_files=False)
    assert {"local", "dev", "staging", "prod"} <= set(cfg.environments)
    assert "latest" not in cfg.env("prod").tags and "latest" not in cfg.env("staging").tags


CASES: list[tuple[str, str, str, str]] = [
    ("unknown top-level key", "[project]", "[colour]\nx = 1\n\n[project]",
     "pipeline.toml: colour: unknown key (fix: remove it or use one of: bases, build, environments, infra, "
     "project, registry, scan, services, signing, versioning)"),
    ("unknown service key", 'port = 8080\n', 'port = 8080\nimage_name = "x"\n',
     "pipeline.toml: services[0].image_name: unknown key (fix: remove it or use one of: bases, build_args, "
     "checks, context, depends_on, dockerfile, health_path, name, platforms, port, probes, ready_path, "
     "repository, volumes)"),
    ("port as string", "port = 8080", 'port = "8080"',
     "pipeline.toml: services[0].port: expected integer, got string '8080' (fix: set port to an integer)"),
    ("port out of range", "port = 8080", "port = 70000",
     "pipeline.toml: services[0].port: 70000 is out of range (fix: use an integer between 1 and 65535)"),
    ("unknown dependency", 'depends_on = ["postgres"]', 'depends_on = ["postgress"]',
     "pipeline.toml: services[0].depends_on: unknown service 'postgress' (fix: use one of: api, docs, postgres)"),
    ("self dependency", 'depends_on = ["postgres"]', 'depends_on = ["api"]',
     "pipeline.toml: services[0].depends_on: 'api' depends on itself (fix: remove it from depends_on)"),
    ("missing Dockerfile", 'dockerfile = "df/api.Dockerfile"', 'dockerfile = "df/nope.Dockerfile"',
     "pipeline.toml: services[0].dockerfile: file 'df/nope.Dockerfile' does not exist "
     "(fix: create it or point dockerfile at an existing file)"),
    ("missing context", 'context = "svc/api"', 'context = "svc/gone"',
     "pipeline.toml: services[0].context: directory 'svc/gone' does not exist "
     "(fix: create it or point context at an existing directory)"),
    ("duplicate service name", 'name = "docs"', 'name = "api"',
     "pipeline.toml: services[1].name: duplicate service name 'api' (fix: give every service a unique name)"),
    ("duplicate port", "port = 8083", "port = 8080",
     "pipeline.toml: services[1].port: port 8080 already used by 'api' (fix: give every service its own port)"),
    ("invalid service name", 'name = "docs"', 'name = "Docs_Site"',
     "pipeline.toml: services[1].name: 'Docs_Site' is not a valid name (fix: use 'docs-site')"),
    ("environment name with an accent", "[environments.dev]", '[environments."dév"]',
     "pipeline.toml: environments.\"dév\": 'dév' is not a valid name (fix: use 'dev')"),
    ("empty environment name", "[environments.dev]", '[environments.""]',
     "pipeline.toml: environments.\"\": '' is not a valid name (fix: use lowercase letters, digits and '-')"),
    ("uppercase environment name", "[environments.dev]", "[environments.Dev]",
     "pipeline.toml: environments.Dev: 'Dev' is not a valid name (fix: use 'dev')"),
    ("namespace with an accent", 'namespace = "veza"', 'namespace = "véza"',
     "pipeline.toml: registry.namespace: 'véza' is not an OCI repository path (lowercase letters and digits, "
     "separated by '.', '_', '__' or '-', components joined by '/') (fix: use 'veza')"),
    ("unknown base", 'bases = ["golang"]', 'bases = ["golang", "java"]',
     "pipeline.toml: services[0].bases: unknown base 'java' (fix: use one of the [bases] tables: golang, postgres)"),
    ("unknown severity", 'scan_threshold = "HIGH"', 'scan_threshold = "SEVERE"',
     "pipeline.toml: environments.prod.scan_threshold: 'SEVERE' is not allowed "
     "(fix: use one of: UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL)"),
    ("unknown stage", DEV_STAGES, 'stages = ["build", "test", "push", "deploy"]',
     "pipeline.toml: environments.dev.stages: 'test' is not allowed (fix: use items from: {stages})"),
    ("misspelt stage", DEV_STAGES, 'stages = ["build", "sacn", "push", "deploy"]',
     "pipeline.toml: environments.dev.stages: 'sacn' is not allowed (fix: did you mean 'scan'? use items from: "
     "{stages})"),
    ("stage listed twice", DEV_STAGES,
     'stages = ["build", "scan", "push", "push", "deploy"]',
     "pipeline.toml: environments.dev.stages: 'push' is listed twice (fix: list each item of stages once)"),
    ("misspelt tag kind", 'tags = ["sha", "branch"]', 'tags = ["sah", "branch"]',
     "pipeline.toml: environments.dev.tags: 'sah' is not allowed (fix: did you mean 'sha'? use items from: sha, "
     "branch, semver, semver-minor, semver-major, latest)"),
    ("gate after deploy", DEV_STAGES,
     'stages = ["build", "scan", "push", "sign", "deploy", "verify-images"]',
     'pipeline.toml: environments.dev.stages: deploy runs before verify-images '
     '(fix: put "verify-images" before "deploy")'),
    ("sign without push", DEV_STAGES, 'stages = ["build", "sign"]',
     'pipeline.toml: environments.dev.stages: sign needs push (images are signed by registry digest) '
     '(fix: add "push" before "sign")'),
    ("build not first", DEV_STAGES, 'stages = ["scan", "build", "push", "deploy"]',
     'pipeline.toml: environments.dev.stages: scan runs before build (fix: put "build" before "scan")'),
    ("attached stage listed", DEV_STAGES,
     'stages = ["build", "scan", "push", "sbom", "deploy"]',
     "pipeline.toml: environments.dev.stages: 'sbom' is not listed: it runs on its own right after push, wherever "
     "push runs (fix: remove 'sbom' from stages)"),
    ("release-end stage listed", DEV_STAGES,
     'stages = ["build", "scan", "push", "deploy", "published"]',
     "pipeline.toml: environments.dev.stages: 'published' is not listed: it runs on its own at the end of every "
     "release (fix: remove 'published' from stages)"),
    ("latest in prod", 'tags = ["semver"]', 'tags = ["semver", "latest"]',
     "pipeline.toml: environments.prod.tags: 'latest' is never used by prod (fix: remove 'latest' from tags)"),
    ("deploy without push", DEV_STAGES, 'stages = ["build", "deploy"]',
     'pipeline.toml: environments.dev.stages: deploy needs push (deploys are by registry digest) '
     '(fix: add "push" before "deploy")'),
    # No image reaches a cluster unless signed by a trusted key for its digest: deploy without the gate, or with
    # a gate that nothing it trusts ever signs for, is refused at load.
    ("deploy without the trust gate", DEV_STAGES,
     'stages = ["build", "scan", "push", "sign", "deploy"]',
     'pipeline.toml: environments.dev.stages: deploy needs verify-images (no image reaches a cluster unless it is '
     'signed by a trusted key for its digest) (fix: add "verify-images" before "deploy")'),
    ("deploy that nothing signs", DEV_STAGES,
     'stages = ["build", "scan", "push", "verify-images", "deploy"]',
     'pipeline.toml: environments.dev.stages: dev deploys but neither signs its images nor trusts another key '
     '(fix: add "sign" before "verify-images", or name the public key(s) it trusts in trusted_keys)'),
    ("prod deploys without the gate",
     'stages = ["build", "scan", "smoke", "push", "verify-images", "deploy", "verify"]',
     'stages = ["build", "scan", "smoke", "push", "deploy", "verify"]',
     'pipeline.toml: environments.prod.stages: deploy needs verify-images (no image reaches a cluster unless it is '
     'signed by a trusted key for its digest) (fix: add "verify-images" before "deploy")'),
    ("smoke after push", 'stages = ["build", "scan", "smoke", "push", "verify-images", "deploy", "verify"]',
     'stages = ["build", "scan", "push", "smoke", "deploy", "verify"]',
     'pipeline.toml: environments.prod.stages: push runs before smoke (fix: put "smoke" before "push")'),
    ("boolean as string", "require_clean_tree = true", 'require_clean_tree = "yes"',
     "pipeline.toml: environments.prod.require_clean_tree: expected boolean (true/false), got string 'yes' "
     "(fix: set require_clean_tree to a boolean (true/false))"),
    ("password in file", 'password_env = "REG_PW"', 'password_env = "REG_PW"\npassword = "hunter22"',
     "pipeline.toml: registry.password: credentials must not be written in pipeline.toml "
     "(fix: remove it and set password_env to the name of an environment variable)"),
    ("missing registry address", 'address = "127.0.0.1:5000"\n', "",
     "pipeline.toml: registry.address: missing (fix: add address = <string> under [registry])"),
    ("probe path relative", 'path = "/health"', 'path = "health"',
     "pipeline.toml: services[0].probes[0].path: 'health' does not start with '/' "
     "(fix: write an absolute URL path like /health)"),
    ("services not an array", "[[services]]\nname = \"docs\"", "[services2]\nname = \"docs\"",
     "pipeline.toml: services2: unknown key (fix: did you mean 'services'? (allowed: bases, build, environments, "
     "infra, project, registry, scan, services, signing, versioning))"),
    ("typo of a required key", 'dockerfile = "df/api.Dockerfile"', 'dockerfle = "df/api.Dockerfile"',
     "pipeline.toml: services[0].dockerfile: missing (found 'dockerfle': a typo?) "
     "(fix: rename dockerfle to dockerfile)"),
    ("typo of an optional key", 'port = 8080\n', 'port = 8080\ndepends_onn = ["postgres"]\n',
     "pipeline.toml: services[0].depends_onn: unknown key (fix: did you mean 'depends_on'? (allowed: bases, "
     "build_args, checks, context, depends_on, dockerfile, health_path, name, platforms, port, probes, "
     "ready_path, repository, volumes))"),
    ("dockerfile escapes the root", 'dockerfile = "df/api.Dockerfile"', 'dockerfile = "../../etc/passwd"',
     "pipeline.toml: services[0].dockerfile: '../../etc/passwd' is outside the project directory {root} "
     "(fix: write dockerfile as a path inside the project (relative to {name}/ and without '..' above it))"),
    ("context absolute elsewhere", 'context = "svc/api"', 'context = "/etc"',
     "pipeline.toml: services[0].context: '/etc' is outside the project directory {root} "
     "(fix: write context as a path inside the project (relative to {name}/ and without '..' above it))"),
    ("bad TOML", 'name = "veza"', 'name = "veza',
     "pipeline.toml: invalid TOML: Illegal character '\\n' (at line 3, column 13) (fix: fix the syntax at that line)"),
    ("list item not string", 'tags = ["sha", "branch"]', 'tags = ["sha", 7]',
     "pipeline.toml: environments.dev.tags: expected list of strings, found integer 7 "
     "(fix: quote every item of tags, e.g. [\"a\", \"b\"])"),
    ("unknown infra base", 'base = "postgres"', 'base = "mysql"',
     "pipeline.toml: infra.postgres.base: unknown base 'mysql' (fix: use one of the [bases] tables: golang, postgres)"),
    ("bad first version", "[project]", '[versioning]\nfirst_version = "1.0"\n\n[project]',
     "pipeline.toml: versioning.first_version: '1.0' is not a semantic version "
     "(fix: write it as MAJOR.MINOR.PATCH, e.g. 0.1.0)"),
]


@pytest.mark.parametrize(("case", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_config_gives_exact_one_line(project: Path, case: str, old: str, new: str, expected: str) -> None:
    assert old in VALID, case
    err = _load(project, VALID.replace(old, new, 1))
    assert err.exit_code == 2
    root = project.resolve()
    # {stages}: the registry's listable stages, so that adding a stage does not break the expected lines
    assert err.one_line() == expected.replace("{root}", str(root)).replace("{name}", root.name).replace(
        "{stages}", ", ".join(listable()))
    assert "\n" not in err.one_line()


def test_files_read_as_they_are_may_live_outside_the_project(project: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    # A machine-wide Trivy DB seed, a shared ignore policy, a values file kept with the cluster's secrets: the
    # tests and real setups name these by absolute path or '..' (only build inputs must be inside the project).
    shared = tmp_path_factory.mktemp("shared")
    text = VALID.replace('values_file = "helm/values-dev.yaml"', f'values_file = "{shared}/values.yaml"', 1)
    text = text.replace("[project]", f'[scan]\nignore_file = "../shared/.trivyignore.yaml"\n'
                                      f'mirror_seed = "{shared}/seed.yaml"\n\n[project]', 1)
    (project / "pipeline.toml").write_text(text)
    cfg = load_config(project / "pipeline.toml")
    assert cfg.scan.mirror_seed == shared / "seed.yaml"
    assert cfg.scan.ignore_file == project / "../shared/.trivyignore.yaml"
    assert cfg.env("dev").values_file == (shared / "values.yaml").resolve()


def test_invoke_reports_config_error_in_one_line_exit_2(project: Path) -> None:
    """Through the real CLI: one line on stderr, exit 2, no traceback."""
    (project / "pipeline.toml").write_text(VALID.replace('port = 8080', 'port = "8080"'))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "VEZA_CONFIG": str(project / "pipeline.toml")}
    cp = subprocess.run([sys.executable, "-m", "invoke", "build", "--dry-run"], cwd=root, env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    assert cp.returncode == 2, cp.stderr
    assert cp.stderr.strip() == ("error: pipeline.toml: services[0].port: expected integer, got string '8080' "
                                 "(fix: set port to an integer)")
    assert "Traceback" not in cp.stdout + cp.stderr




def test_lint_stage_is_optional(project: Path) -> None:
    base = DEV_STAGES
    assert base in VALID
    (project / "pipeline.toml").write_text(VALID.replace(base, base.replace('"build", ', '"build", "lint", ')))
    cfg = load_config(project / "pipeline.toml")
    assert any(e.stages[:2] == ("build", "lint") for e in cfg.environments.values())


def test_kube_versions_are_checked(project: Path) -> None:
    text = VALID.replace('[environments.dev]', '[environments.dev]\nkube_versions = ["1.29", "v1.31.2"]', 1)
    assert text != VALID
    (project / "pipeline.toml").write_text(text)
    assert load_config(project / "pipeline.toml").environments["dev"].kube_versions == ("1.29", "v1.31.2")
    err = _load(project, VALID.replace('[environments.dev]', '[environments.dev]\nkube_versions = ["latest"]', 1))
    assert err.one_line().startswith("pipeline.toml: environments.dev.kube_versions: 'latest' is not a Kubernetes")


@pytest.mark.parametrize("declared", ["require_release_tag = true", "confirm = true", "require_clean_tree = true",
                                      'promote_requires = ["scan"]'])
def test_latest_is_refused_by_what_an_environment_declares_not_by_its_name(project: Path, declared: str) -> None:
    qa = ('[environments.qa]\nnamespace = "veza-qa"\nregistry_namespace = "veza-qa"\n'
          'values_file = "helm/values-qa.yaml"\n'
          'stages = ["build", "push"]\ntags = ["sha", "latest"]\n')
    err = _load(project, VALID + qa + declared + "\n")
    assert err.one_line() == ("pipeline.toml: environments.qa.tags: 'latest' is never used by qa "
                              "(fix: remove 'latest' from tags)")
    # An environment that declares none of it may take `latest`, whatever its name (was: staging/prod by name).
    staging = qa.replace("[environments.qa]", "[environments.staging]")
    (project / "pipeline.toml").write_text(VALID + staging)
    assert "latest" in load_config(project / "pipeline.toml").env("staging").tags


def test_lint_without_an_environment_gates_at_the_strictest_threshold_of_all(project: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core import paths
    from pipeline.lint.release import default_settings

    text = VALID.replace("[environments.prod]", "[environments.live]").replace('scan_threshold = "HIGH"',
                                                                                 'scan_threshold = "MEDIUM"')
    (project / "pipeline.toml").write_text(text)
    monkeypatch.setattr(paths, "CONFIG_FILE", project / "pipeline.toml")
    assert default_settings("", None, versions_needed=False) == ("MEDIUM", ())


def test_a_missing_config_file_names_the_variable_that_moves_it(tmp_path: Path) -> None:
    """The fix names VEZA_CONFIG (pipeline.core.paths), not a --config flag no task has."""
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "pipeline.toml")
    assert err.value.exit_code == 2
    assert err.value.one_line() == (f"pipeline.toml: not found at {tmp_path / 'pipeline.toml'} (fix: point "
                                    "VEZA_CONFIG at an existing pipeline.toml, or unset it for the checkout's own)")


# ---------------------------------------------------------------- environments sharing a registry namespace

QA = ('[environments.qa]\nnamespace = "veza-qa"\nvalues_file = "helm/values-qa.yaml"\n'
      'stages = ["build", "push", "sign"]\ntags = ["branch"]\n')


@pytest.mark.parametrize("dev_stages,qa_tags,why", [
    ('["build", "scan", "push"]', '["branch"]', "the same tags (branch)"),
    ('["build", "push", "sign", "verify-images", "deploy"]', '["semver-minor"]', "different signing keys"),
    ('["build", "push", "sign", "verify-images", "deploy"]', '["sha", "branch"]',
     "different signing keys and the same tags (sha, branch)"),
])
def test_two_environments_on_one_registry_namespace_are_refused_naming_both(
        project: Path, dev_stages: str, qa_tags: str, why: str) -> None:
    """local and dev once shared veza-dev: a local release replaced dev's tags and attestation. Any two
    environments that push to one registry + namespace and sign (each with its own key) or write a tag kind in
    common are refused at load, whichever their names, with one line naming both and the two fixes."""
    text = VALID.replace(DEV_STAGES, f"stages = {dev_stages}") \
        + QA.replace('tags = ["branch"]', f"tags = {qa_tags}")
    err = _load(project, text)
    line = err.one_line()
    assert err.exit_code == 2 and "\n" not in line
    assert line.startswith(f"pipeline.toml: environments.qa: dev and qa both push to 127.0.0.1:5000/veza with {why}")
    assert 'give qa its own registry_namespace (e.g. "veza-qa")' in line
    assert 'shares_registry_namespace_with = ["dev"] under [environments.qa]' in line
    # the fix it names works: its own namespace, or the documented key (on either side)
    for fixed in (text.replace('[environments.qa]\n', '[environments.qa]\nregistry_namespace = "veza-qa"\n'),
                  text.replace('[environments.qa]\n', '[environments.qa]\nshares_registry_namespace_with = ["dev"]\n'),
                  text.replace('[environments.dev]\n',
                               '[environments.dev]\nshares_registry_namespace_with = ["qa"]\n')):
        (project / "pipeline.toml").write_text(fixed)
        load_config(project / "pipeline.toml")


def test_sharing_a_namespace_is_fine_without_a_common_tag_or_two_signers(project: Path) -> None:
    # dev (sha, branch; does not sign) and prod (semver) already share the default namespace "veza"
    cfg = load_config(project / "pipeline.toml")
    assert cfg.env("dev").repository(cfg.service("api")) == cfg.env("prod").repository(cfg.service("api"))
    # another registry, or another namespace, never collides
    text = VALID + QA.replace('tags = ["branch"]', 'tags = ["sha"]').replace(
        "[environments.qa]\n", '[environments.qa]\nregistry = "127.0.0.1:5001"\n')
    (project / "pipeline.toml").write_text(text)
    assert load_config(project / "pipeline.toml").env("qa").registry == "127.0.0.1:5001"


def test_shares_registry_namespace_with_names_another_environment(project: Path) -> None:
    for bad in ('"nope"', '"qa"'):
        qa = QA.replace('tags = ["branch"]', f'registry_namespace = "q"\nshares_registry_namespace_with = [{bad}]')
        err = _load(project, VALID + qa + 'tags = ["sha"]\n')
        assert err.one_line().startswith(f"pipeline.toml: environments.qa.shares_registry_namespace_with: {bad[1:-1]!r}"
                                         " is not another environment (fix: use one of: dev, prod)")


def test_the_project_environments_each_push_to_their_own_namespace() -> None:
    """The project's own config: local no longer pushes to dev's veza-dev (its own veza-local)."""
    cfg = load_config(check_files=False)
    spaces = {name: (e.registry, e.registry_namespace) for name, e in cfg.environments.items()}
    assert spaces["local"] == ("127.0.0.1:5000", "veza-local")
    assert len(set(spaces.values())) == len(spaces), spaces


@pytest.mark.parametrize("registry", ["localhost:5000", "LOCALHOST:5000", "127.1:5000", "[::1]:5000",
                                      "127.0.0.1:05000", "127.0.0.1:5000/"])
def test_one_registry_written_another_way_is_still_the_same_registry(project: Path, registry: str) -> None:
    """The collision check compares the host a registry names, not its spelling (canonical_registry)."""
    text = VALID.replace(DEV_STAGES, 'stages = ["build", "push", "sign"]') \
        + QA.replace('stages = ["build", "push", "sign"]', f'registry = "{registry}"\nregistry_namespace = "veza"\n'
                     'stages = ["build", "push", "sign"]')
    line = _load(project, text).one_line()
    assert "dev and qa both push to 127.0.0.1:5000/veza with different signing keys" in line, line


def test_a_namespace_reaching_into_another_environments_repositories_is_refused(project: Path) -> None:
    """qa's namespace `veza/infra` + service `postgres` would be dev's infra repository: full paths are compared."""
    text = VALID.replace(DEV_STAGES, 'stages = ["build", "push", "sign"]\n'
                         'local_infra = true').replace('name = "docs"\n', 'name = "docs"\nrepository = "postgres"\n') \
        + QA.replace('stages = ["build", "push", "sign"]', 'registry_namespace = "veza/infra"\n'
                     'stages = ["build", "push", "sign"]\ntags = ["sha"]').replace('tags = ["branch"]\n', '', 1)
    line = _load(project, text).one_line()
    assert "dev and qa both push to 127.0.0.1:5000/veza/infra/postgres with different signing keys" in line, line


def test_canonical_repository_is_the_canonical_host_and_the_lowercased_path() -> None:
    """One spelling for the config's collision check and the audit's classification of what runs."""
    from pipeline.core.config import canonical_repository

    assert canonical_repository("LOCALHOST:5000/Veza-Dev/infra/Redis") == "127.0.0.1:5000/veza-dev/infra/redis"
    assert canonical_repository("registry.example.org:443/x/y") == "registry.example.org/x/y"
    assert canonical_repository("127.0.0.2:5000/x") != canonical_repository("127.0.0.1:5000/x")
    assert canonical_repository("Veza-Local") == "veza-local"


def test_canonical_registry_keeps_distinct_hosts_apart() -> None:
    from pipeline.core.config import canonical_registry

    assert canonical_registry("Registry.Example.ORG:443") == "registry.example.org"
    assert canonical_registry("127.0.0.2:5000") == "127.0.0.2:5000" != canonical_registry("127.0.0.1:5000")
    assert canonical_registry("[0:0:0:0:0:0:0:1]:5000") == "127.0.0.1:5000"
    assert canonical_registry("[fd00::0001]:5000") == "[fd00::1]:5000"
    assert canonical_registry("face.example:5000") == "face.example:5000"   # hex-looking names stay names
