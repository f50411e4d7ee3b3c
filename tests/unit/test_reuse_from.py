"""`reuse_from` (pipeline/core/config_reuse.py) and the plan's use of it (pipeline/stages/registry_reuse.py): which
environments' repositories a plan may reuse from, checked at load, and what the plan says when one cannot vouch."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.stages.registry_reuse import (
    Lookup,
    RegistryImage,
    ReuseSource,
    decide,
    find_reusable,
    reuse_sources,
)
from pipeline.tools.registry_clients import RegistryClients
from pipeline.trust.keys import KeyPaths, generate_key_pair
from tests.unit.test_config import VALID

DIGEST = "sha256:" + "ab" * 32
PROD = "[environments.prod]\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    for d in ("svc/api", "svc/docs", "df"):
        (root / d).mkdir(parents=True)
    (root / "df/api.Dockerfile").write_text("FROM scratch\n")
    (root / "df/docs.Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setenv("VEZA_KEY_DIR", str(tmp_path / "keys"))   # outside the project, as the config requires
    return root


def _write(project: Path, reuse: str) -> Path:
    path = project / "pipeline.toml"
    path.write_text(VALID.replace(PROD, f"{PROD}reuse_from = {reuse}\n"))
    return path


def _error(project: Path, reuse: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(project, reuse))
    assert info.value.exit_code == 2
    return info.value.one_line()


def test_reuse_from_loads_in_order_and_defaults_to_nothing(project: Path) -> None:
    cfg = load_config(_write(project, '["dev"]'))
    assert cfg.env("prod").reuse_from == ("dev",) and cfg.env("dev").reuse_from == ()


def test_the_trees_staging_and_prod_reuse_from_the_environments_before_them() -> None:
    cfg = load_config(check_files=False)
    assert cfg.env("staging").reuse_from == ("dev",)
    assert cfg.env("prod").reuse_from == ("staging", "dev")
    assert cfg.env("dev").reuse_from == () and cfg.env("local").reuse_from == ()


@pytest.mark.parametrize(("reuse", "expected"), [
    ('["prod"]', "'prod' is the environment itself (its own repository is always looked up first) (fix: remove "
                 "'prod')"),
    ('["qa"]', "'qa' is not an environment (fix: use one of: dev)"),
    ('["dev", "dev"]', "'dev' is listed twice"),
    ('"dev"', "expected list of strings"),
])
def test_a_bad_reuse_from_is_one_line_naming_the_key(project: Path, reuse: str, expected: str) -> None:
    line = _error(project, reuse)
    assert line.startswith("pipeline.toml: environments.prod.reuse_from: ") and expected in line, line


def test_a_configuration_made_from_another_names_only_environments_it_has() -> None:
    # not only load_config: a Config narrowed by dataclasses.replace (a task, a test) is checked when it is made,
    # not on a fresh runner's first registry lookup ("unknown environment 'dev'" deep in the build stage)
    import dataclasses

    base = load_config()
    staging = base.env("staging")
    with pytest.raises(ConfigError) as exc:
        dataclasses.replace(base, environments={"gate": dataclasses.replace(staging, name="gate")})
    assert "environments.gate.reuse_from names 'dev'" in exc.value.message, exc.value.message
    shared = dataclasses.replace(staging, name="gate", reuse_from=(), shares_registry_namespace_with=("qa",))
    with pytest.raises(ConfigError, match="shares_registry_namespace_with names 'qa'"):
        dataclasses.replace(base, environments={"gate": shared})
    alone = dataclasses.replace(staging, name="gate", reuse_from=())
    narrowed = dataclasses.replace(base, environments={"gate": alone})
    assert set(narrowed.environments) == {"gate"}


def test_a_source_that_neither_signs_nor_verifies_is_refused(project: Path) -> None:
    path = _write(project, '["dev"]')
    path.write_text(path.read_text().replace('stages = ["build", "scan", "push", "sign", "verify-images", "deploy"]',
                                             'stages = ["build", "scan", "push"]'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.one_line() == (
        "pipeline.toml: environments.prod.reuse_from: dev neither signs nor verifies its images, so no trusted key "
        "could vouch for an image in its repository (fix: add \"sign\" to [environments.dev].stages, or remove 'dev')")


def test_a_source_whose_key_is_not_on_this_runner_is_kept_with_the_reason(project: Path) -> None:
    cfg = load_config(_write(project, '["dev"]'))
    sources = reuse_sources(cfg, cfg.env("prod"))
    assert [s.env.name for s in sources] == ["prod", "dev"]
    assert sources[0].trusted is None and not sources[0].unusable
    assert sources[1].unusable.startswith("dev's images cannot be checked here (dev trusts no signing key")

    generate_key_pair(KeyPaths(cfg.signing.key_dir / "dev"), "pass")
    dev = reuse_sources(cfg, cfg.env("prod"))[1]
    assert not dev.unusable and dev.trusted is not None and len(dev.trusted) == 1


def test_a_miss_everywhere_says_why_for_each_source(project: Path) -> None:
    cfg = load_config(_write(project, '["dev"]'))
    prod, dev = cfg.env("prod"), cfg.env("dev")
    down = f"registry {prod.registry} did not answer the reuse lookup (connection refused)"
    found = find_reusable(RegistryClients(cfg, prod), [ReuseSource(prod), ReuseSource(dev, (), "no key here")],
                          cfg.service("api"), DIGEST, {prod.registry: down})
    assert found == Lookup(None, f"{down}; no key here")
    d = decide(input_digest=DIGEST, base_missing=False, no_cache=False, local_image=None, registry=found)
    assert (d.action, d.reason) == ("build", f"no image with this input digest here; {down}; no key here")


def test_an_image_another_environment_vouched_for_is_reused_saying_whose() -> None:
    image = RegistryImage("127.0.0.1:5000/veza-dev/docs", "sha256:" + "cd" * 32, "sha256:" + "ef" * 32,
                          environment="dev")
    d = decide(input_digest=DIGEST, base_missing=False, no_cache=False, local_image=None, registry=Lookup(image))
    assert (d.action, d.source) == ("reuse", "registry")
    assert d.reason == (f"reused from dev's {image.ref}, signed and attested by dev's keys "
                        f"(input digest {DIGEST[:19]}…)")
