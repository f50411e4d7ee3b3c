"""The stage contract: typed run options, the base stage's defaults, the registry's ordering loop and what
runs with a stage run alone. No engine, no git: seconds."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.contract.context import RunContext
from pipeline.contract.options import RunOptions
from pipeline.contract.stage import CANNOT_CHECK, BaseStage, StageSummary
from pipeline.core.config import Config, load_config
from pipeline.core.errors import ConfigError, UsageError
from pipeline.core.paths import ROOT
from pipeline.core.reporter import PlainReporter
from pipeline.core.stage_registry import (
    STAGE_REGISTRY,
    StageEntry,
    from_sources,
    listable,
    ordering_problem,
    with_attached,
    with_gates,
)
from pipeline.release.runner import open_run, run_stages
from tests.unit.test_runner import info


def test_options_are_typed_frozen_and_a_misspelt_one_fails_at_once() -> None:
    opts = RunOptions(no_cache=True, workers=3)
    assert opts.no_cache and opts.workers == 3 and not opts.fail_fast and opts.compose_overrides == ()
    with pytest.raises(TypeError, match="no_cahe"):
        RunOptions(**{"no_cahe": True})  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.workers = 1  # type: ignore[misc]


@pytest.mark.parametrize(("flags", "message"), [
    ({"workers": -1}, "--workers -1 is negative"),
    ({"smoke_wait_s": 0.0}, "--wait-timeout 0 is not positive"),
    ({"deploy_timeout_s": -5}, "--deploy-timeout -5 is not positive"),
])
def test_a_bad_option_value_is_a_usage_error_naming_the_flag(flags: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as err:
        RunOptions(**flags)  # type: ignore[arg-type]
    assert err.value.exit_code == 2 and err.value.message == message


def test_the_ordering_rules_are_one_loop_over_the_registry() -> None:
    assert ordering_problem(("build", "lint", "scan", "smoke", "push", "sign", "verify-images", "deploy",
                             "verify")) is None
    assert ordering_problem(("build", "deploy")) == ("deploy needs push (deploys are by registry digest)",
                                                     'add "push" before "deploy"')
    assert ordering_problem(("build", "deploy", "push")) == ("deploy needs verify-images (no image reaches a cluster "
                                                             "unless it is signed by a trusted key for its digest)",
                                                             'add "verify-images" before "deploy"')
    assert ordering_problem(("build", "push", "deploy", "verify-images")) == ("deploy runs before verify-images",
                                                                              'put "verify-images" before "deploy"')
    assert ordering_problem(("scan", "build")) == ("scan runs before build", 'put "build" before "scan"')


def test_a_new_registry_line_brings_its_rules_to_the_config(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """The config reads the registry when it loads: a stage added there is listable and its `requires` hold."""
    monkeypatch.setitem(STAGE_REGISTRY, "canary", StageEntry("x:Canary", requires=("deploy",), why="it shifts traffic"))
    text = (ROOT / "pipeline.toml").read_text()
    local = 'stages = ["build", "scan", "push", "sign", "verify-images", "migrate", "deploy"]'
    assert local in text
    path = tmp_path / "pipeline.toml"
    path.write_text(text.replace(local, 'stages = ["build", "scan", "push", "sign", "verify-images", "deploy", '
                                        '"canary"]', 1))
    assert load_config(path, check_files=False).env("local").stages[-1] == "canary"
    path.write_text(text.replace(local, 'stages = ["build", "scan", "push", "canary"]', 1))
    with pytest.raises(ConfigError) as err:
        load_config(path, check_files=False)
    assert err.value.one_line() == ('pipeline.toml: environments.local.stages: canary needs deploy (it shifts '
                                    'traffic) (fix: add "deploy" before "canary")')


def test_loading_the_config_imports_no_stage_module() -> None:
    code = ("import sys; from pipeline.core.config import load_config; load_config(check_files=False); "
            "print(sorted(m for m in sys.modules if m.startswith(('pipeline.stages', 'pipeline.contract', "
            "'pipeline.release'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_a_stage_run_alone_brings_its_gates_and_attached_stages() -> None:
    prod = ("build", "lint", "scan", "smoke", "push", "sign", "verify-images", "deploy", "verify")
    assert with_gates(["deploy"], prod) == ["verify-images", "deploy"]
    assert with_gates(["deploy"], ("build", "push", "deploy")) == ["deploy"]
    # `invoke deploy` migrates first where the environment lists migrate (after the trust gate)
    listed = ("build", "push", "sign", "verify-images", "migrate", "deploy")
    assert with_gates(["deploy"], listed) == ["verify-images", "migrate", "deploy"]
    assert ordering_problem(("build", "push", "sign", "verify-images", "deploy", "migrate")) == (
        "deploy runs before migrate", 'put "migrate" before "deploy"')
    assert ordering_problem(("build", "push", "migrate", "sign", "verify-images", "deploy")) == (
        "migrate runs before verify-images", 'put "verify-images" before "migrate"')
    assert ordering_problem(("build", "migrate", "deploy"))[0].startswith("migrate needs push")  # type: ignore[index]
    assert with_attached(["push"], release=False) == ["push", "sbom"]
    assert with_attached(list(prod), release=True) == [*prod[:5], "sbom", *prod[5:], "published"]
    assert "sbom" not in listable() and "published" not in listable()


def test_which_commands_read_the_sources_is_declared_on_the_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that builds starts the release from git (a new manifest, build contexts must exist); the others work
    from the recorded manifest. Declared per stage, so a new stage that reads the sources says so on its line."""
    assert from_sources(["build", "push"]) and not from_sources(["push", "deploy"]) and not from_sources([])
    monkeypatch.setitem(STAGE_REGISTRY, "docs-site", StageEntry("x:DocsSite", from_sources=True))
    assert from_sources(["docs-site"])


class Plain(BaseStage):
    name = "build"

    def __init__(self) -> None:
        self.ran = 0

    def run(self, ctx: RunContext) -> StageSummary:
        self.ran += 1
        return StageSummary("done")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")


def test_a_base_stage_applies_and_is_never_resumed_unchecked(cfg: Config) -> None:
    stage, lines = Plain(), list[str]()
    for resume in (False, True):
        with open_run(cfg, cfg.env("local"), PlainReporter(sink=lines.append), creates_manifest=True,
                      info=info()) as ctx:
            assert stage.skip(ctx) is None and stage.holds(ctx) == CANNOT_CHECK
            outcomes = run_stages(ctx, [stage], resume=resume)
    assert stage.ran == 2 and [str(o.status) for o in outcomes] == ["ok"]
    assert any(line.endswith(f"build: {CANNOT_CHECK}") for line in lines), lines


def test_the_attached_stages_own_their_conditions_and_the_report_shows_them_only_when_news(cfg: Config) -> None:
    from pipeline.contract.context import Outcome
    from pipeline.core.vocab import StageStatus
    from pipeline.release.report import shown_stages
    from pipeline.stages.attach_sbom import SbomStage
    from pipeline.stages.published import PublishedStage

    bare = dataclasses.replace(cfg.env("local"), stages=("build", "push"))
    cfg = dataclasses.replace(cfg, environments={**cfg.environments, "local": bare})
    with open_run(cfg, bare, PlainReporter(sink=lambda _l: None), creates_manifest=True, info=info()) as ctx:
        assert SbomStage().skip(ctx) == "no SBOM to attach: scan is not among this environment's stages"
        assert PublishedStage().skip(ctx) == "nothing to re-read: this environment neither signs nor verifies images"
        assert PublishedStage.check_only and not SbomStage.check_only
        done = [Outcome("build", StageStatus.OK), Outcome("push", StageStatus.OK), Outcome("sbom", StageStatus.OK)]
        assert shown_stages(ctx, done) == ["build", "push"]
        assert shown_stages(ctx, [*done, Outcome("published", StageStatus.FAILED)]) == ["build", "push", "published"]
    signed = dataclasses.replace(bare, stages=("build", "scan", "push", "sign"))
    with open_run(cfg, signed, PlainReporter(sink=lambda _l: None), creates_manifest=True, info=info()) as ctx:
        assert SbomStage().skip(ctx) is None and PublishedStage().skip(ctx) is None


@pytest.mark.parametrize(("argv", "line"), [
    (["build", "--workers=-1"], "error: --workers -1 is negative (fix: give 0 (auto) or a positive number)"),
    (["smoke", "--wait-timeout=-3"], "error: --wait-timeout -3 is not positive (fix: give seconds, e.g. 120)"),
    (["release", "--deploy-timeout=-1"], "error: --deploy-timeout -1 is not positive (fix: give seconds, e.g. 300)"),
    # a value that does not convert: invoke's parser raised a bare ValueError (a traceback, exit 1)
    (["build", "--workers=abc"], "error: --workers 'abc' is not a whole number (fix: give a whole number, "
                                 "e.g. --workers=10)"),
    (["smoke", "-w", "abc"], "error: --wait-timeout 'abc' is not a number (fix: give a number, "
                             "e.g. --wait-timeout=10)"),
    (["release", "--deploy-timeout=1.5"], "error: --deploy-timeout '1.5' is not a whole number (fix: give a whole "
                                          "number, e.g. --deploy-timeout=10)"),
    # --dry-run took another path and never built the options: a negative --workers planned a build
    (["build", "--dry-run", "--workers=-2"],
     "error: --workers -2 is negative (fix: give 0 (auto) or a positive number)"),
    # a missing required flag: invoke said "'promote' did not receive required positional arguments: 'from_'"
    (["promote", "--from", "local"],
     "error: promote needs --from ENV and --to ENV (fix: e.g. `invoke promote --from dev --to staging`)"),
    (["scan-gate"], "error: scan-gate needs --report FILE (a Trivy JSON report) (fix: e.g. `trivy image --format "
                    "json -o r.json IMAGE`, then `invoke scan-gate --report r.json`)"),
    # a bad --to, before the source environment's manifest is opened (it has none here)
    (["promote", "--from", "local", "--to", "nope"],
     "error: unknown environment 'nope' (fix: use one of: local, dev, staging, prod)"),
])
def test_a_bad_flag_is_one_line_and_exit_2_before_anything_runs(argv: list[str], line: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "invoke", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "VEZA_STATE_DIR": str(tmp_path)})
    assert (done.returncode, done.stderr.strip()) == (2, line), done.stdout + done.stderr
    assert not any(tmp_path.iterdir())   # nothing half done: no state, lock or run directory
