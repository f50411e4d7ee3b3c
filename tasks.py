"""Invoke entry point of veza-pipeline. Thin: parse arguments, call one pipeline function, map errors to exit codes.

Heavy modules are imported inside each task so that `invoke --list` stays fast.
Exit codes: see README.md ("Exit codes") or pipeline/core/errors.py.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

F = TypeVar("F", bound=Callable[..., Any])


class _Flag(Argument):
    """A task flag whose value does not convert (`--workers abc`) is one line and exit 2, not the traceback of
    the ValueError invoke's parser lets out (it catches only its own ParseError)."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError:
            flag, what = self.names[0], {int: "a whole number", float: "a number"}.get(self.kind, "a value")
            raise Exit(f"error: --{flag} {value!r} is not {what} (fix: give {what}, e.g. --{flag}=10)",
                       code=2) from None


class _Task(Task[Any]):
    """invoke's Task with `_Flag`s: the same arguments, only their bad values fail cleanly."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            arg.__class__ = _Flag   # adds behaviour only: same fields, so no copy
        return args


task = functools.partial(invoke_task, klass=_Task)


def _cli(fn: F) -> F:
    """Map pipeline errors to one clear line on stderr and their exit code; never a traceback for user errors."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pipeline.core.errors import PipelineError

        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            print(f"error: {exc.one_line()}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted: cleanup ran; rerun the same command to resume", file=sys.stderr)
            raise Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _setup(env: str = "", verbose: bool = False, *, sources: bool = False) -> tuple[Any, Any, Any]:
    """The config (loaded once, here), the environment object and the run's reporter.

    sources=True: the services' build contexts and Dockerfiles must exist (building needs them; pushing,
    scanning, deploying work from the manifest alone)."""
    from pipeline.core.config import load_config
    from pipeline.core.vocab import DEFAULT_ENV
    from pipeline.observe.reporters import make_reporter

    cfg = load_config(check_files=sources)
    return cfg, cfg.env(env or DEFAULT_ENV), make_reporter(verbose=verbose)


def _stages(names: list[str], env: str, services: list[str] | None = None, verbose: bool = False,
            **options: Any) -> None:
    """A task that is one or more stages: the runner, on the environment's manifest, with the flags as typed
    RunOptions (pipeline/contract/options.py: a misspelt option fails here, a bad value is exit 2)."""
    from pipeline.contract.options import RunOptions
    from pipeline.core.stage_registry import from_sources
    from pipeline.release.runner import run_command

    run_options = RunOptions(**options)
    cfg, environment, reporter = _setup(env, verbose, sources=from_sources(names))
    run_command(cfg, environment, names, reporter, services=_list(services), options=run_options)


ENV_HELP = "environment (default: local)"
VERBOSE_HELP = "print every line the stages and their tools say (else: the live view, logs in the run directory)"


def _list(value: Any) -> list[str]:
    """Invoke's iterable flags give lists; accept comma-separated values too."""
    out: list[str] = []
    for v in value or []:
        out.extend(x for x in str(v).split(",") if x)
    return out


# ---------------------------------------------------------------- foundation

@task(help={"fix": "also install what is missing (runs the bootstrap)"})
@_cli
def doctor(c: Context, fix: bool = False) -> None:
    """Check every required tool and the engine; print the fix for anything missing (exit 6 if so)."""
    from pipeline.machine.doctor import run_doctor

    run_doctor(fix=fix)


@task(help={"quiet": "print only what was installed",
            "tests": "also install what only the test suite uses (chromium, tmux, pushgateway, qemu-user-static)"})
@_cli
def bootstrap(c: Context, quiet: bool = False, tests: bool = False) -> None:
    """Make this machine ready, idempotently: venv, tool binaries, Docker engine (installs only what is missing)."""
    from pipeline.machine.bootstrap import bootstrap as run_bootstrap

    run_bootstrap(quiet=quiet, tests=tests)


@task(
    help={
        "unit": "only the unit tests (no engine needed)",
        "k": "pytest -k expression",
        "no_lint": "skip ruff and mypy",
        "pytest_args": "extra arguments for pytest",
        "workers": "pytest-xdist workers (default 3, one per lane: tests/lanes.py; 0: one process)",
    }
)
@_cli
def test(c: Context, unit: bool = False, k: str = "", no_lint: bool = False, pytest_args: str = "",
         workers: int = -1) -> None:
    """Run ruff, mypy and the whole test suite (unit + integration + e2e on the real engine)."""
    from pipeline.machine.testrun import PYTEST_WORKERS, run_tests

    run_tests(unit_only=unit, keyword=k, lint=not no_lint, extra=pytest_args,
              workers=PYTEST_WORKERS if workers < 0 else workers)


@task(name="ci-local", help={"pipeline": "branch (the default branch's: ends with dev deployed) or tag (a vX.Y.Z "
                                          "tag at HEAD: the prod release)"})
@_cli
def ci_local(c: Context, pipeline: str = "branch") -> None:
    """Run .gitlab-ci.yml here with the pinned gitlab-ci-local, each job isolated (README, "CI")."""
    from pipeline.machine.ci_local import run_ci_local
    from pipeline.release.ci_keys import kept_dev_key

    run_ci_local(pipeline, kept_dev_key=kept_dev_key)


# ---------------------------------------------------------------- versioning

@task(help={"env": "environment whose tag policy to apply (default: local)",
            "json": "machine-readable output (stable schema)"})
@_cli
def version(c: Context, env: str = "", json: bool = False) -> None:
    """Print the version facts (SHA, branch, dirty, semver, next) and the exact tags each service would get."""
    from pipeline.core.vocab import DEFAULT_ENV
    from pipeline.versioning.cli import print_version

    print_version(env_name=env or DEFAULT_ENV, as_json=json)


@task(
    help={
        "part": "auto (from conventional commits) | major | minor | patch",
        "pre": "pre-release label, e.g. rc → 1.4.0-rc.1",
        "dry_run": "print the tag and message, create nothing",
    }
)
@_cli
def bump(c: Context, part: str = "auto", pre: str = "", dry_run: bool = False) -> None:
    """Create the next annotated release tag on HEAD, with the changelog as its message."""
    from pipeline.versioning.cli import bump_version

    bump_version(part=part, pre=pre or None, dry_run=dry_run)


@task(help={"since": "tag to start from (default: the last release tag)"})
@_cli
def changelog(c: Context, since: str = "") -> None:
    """Print the changelog since the last release tag, grouped (Breaking, Features, Fixes)."""
    from pipeline.versioning.cli import print_changelog

    print_changelog(since=since or None)


# ---------------------------------------------------------------- images

@task(help={"force": "rebuild even when the recipe digest is unchanged", "no_pull": "do not try upstream pulls"})
@_cli
def bases(c: Context, force: bool = False, no_pull: bool = False) -> None:
    """Provide the base and infra images: pull upstream where possible, else build them from Debian packages."""
    from pipeline.core.progress import reporter_progress
    from pipeline.local.bases import ensure_bases
    from pipeline.observe.reporters import make_reporter

    reporter = make_reporter()
    try:
        ensure_bases(force=force, try_pull=not no_pull, say=reporter.info,
                     progress=reporter_progress(reporter, "bases"))
    finally:
        reporter.run_closed("done")


@task(
    iterable=["service"],
    help={
        "service": "service to build (repeatable; default: all)",
        "env": ENV_HELP,
        "no_cache": "build without the engine's layer cache",
        "workers": "parallel builds (0 = auto)",
        "fail_fast": "stop at the first failing build",
        "dry_run": "print the plan (tags, input digest, action) and build nothing",
        "verbose": "stream the builders' output",
    },
)
@_cli
def build(c: Context, service: list[str] | None = None, env: str = "", no_cache: bool = False,
          workers: int = 0, fail_fast: bool = False, dry_run: bool = False, verbose: bool = False) -> None:
    """Build the service images in parallel, skipping those whose input digest is unchanged."""
    from pipeline.contract.options import RunOptions

    RunOptions(no_cache=no_cache, workers=workers, fail_fast=fail_fast)   # a bad flag is refused on --dry-run too
    if dry_run:
        from pipeline.stages.build import dry_run_plan

        cfg, environment, reporter = _setup(env, verbose, sources=True)
        dry_run_plan(cfg, environment, _list(service), reporter)
        reporter.info("dry run: nothing built")
        return
    _stages(["build"], env, service, verbose, no_cache=no_cache, workers=workers, fail_fast=fail_fast)


@task(help={
    "dry_run": "list what would be removed and remove nothing",
    "keep": "cache tags kept per service (the newest; images the manifest records are always kept)",
    "all_dangling": "remove every dangling image, not only those the pipeline built",
})
@_cli
def prune(c: Context, dry_run: bool = False, keep: int = 2, all_dangling: bool = False) -> None:
    """Cache hygiene: build cache over [build].cache_cap_mb, the pipeline's dangling images, old cache tags."""
    from pipeline.machine.prune import run_prune

    cfg, _environment, reporter = _setup()
    run_prune(cfg, reporter, dry_run=dry_run, keep=keep, all_dangling=all_dangling)


# ---------------------------------------------------------------- scan and lint

@task(iterable=["service"], help={"service": "service to scan (repeatable)", "env": ENV_HELP, "verbose": VERBOSE_HELP})
@_cli
def scan(c: Context, service: list[str] | None = None, env: str = "", verbose: bool = False) -> None:
    """Scan the built images with Trivy (vulns, secrets, misconfig) and apply the environment's gate (exit 3)."""
    _stages(["scan"], env, service, verbose)


@task(
    name="scan-gate",
    help={
        "report": "a Trivy JSON report (SchemaVersion 2)",
        "fail_on": "lowest blocking severity (default HIGH)",
        "ignore_unfixed": "ignore findings without a fixed version",
        "ignore_file": "YAML ignore file (each entry: id, reason, expires)",
        "sarif": "write SARIF here",
        "summary": "write a Markdown summary here",
    },
)
@_cli
def scan_gate(c: Context, report: str = "", fail_on: str = "HIGH", ignore_unfixed: bool = False,
              ignore_file: str = "", sarif: str = "", summary: str = "") -> None:
    """Evaluate any Trivy JSON report with the pipeline's policy (exit 3 when blocked)."""
    from pipeline.core.errors import UsageError
    from pipeline.stages.scan import run_scan_gate

    if not report:
        raise UsageError("scan-gate needs --report FILE (a Trivy JSON report)",
                         "e.g. `trivy image --format json -o r.json IMAGE`, then `invoke scan-gate --report r.json`")

    run_scan_gate(report=report, fail_on=fail_on, ignore_unfixed=ignore_unfixed,
                  ignore_file=ignore_file or None, sarif=sarif or None, summary=summary or None)


@task(
    iterable=["path", "kube_version"],
    help={
        "path": "file or directory to lint (repeatable; default: the project's own)",
        "threshold": "lowest blocking severity (default: the --env's scan_threshold, else the strictest environment's)",
        "format": "text | json",
        "env": "environment whose threshold and cluster's Kubernetes version apply (default: all environments)",
        "kube_version": "Kubernetes version to check schemas for, e.g. 1.31 (repeatable; default: the clusters')",
    },
)
@_cli
def lint(c: Context, path: list[str] | None = None, threshold: str = "", format: str = "text", env: str = "",
         kube_version: list[str] | None = None) -> None:
    """Lint Dockerfiles, compose, k8s, Kustomize and Helm: hadolint, trivy config, helm lint, schemas, VZ rules."""
    from pipeline.lint.run import run_lint

    run_lint(paths=_list(path), threshold=threshold or None, fmt=format, env_name=env,
             kube_versions=tuple(_list(kube_version) or ()))


@task(
    name="trivy-db",
    help={
        "advisories": "build a DB from this YAML advisories file (see pipeline/local/trivydb/__init__.py)",
        "push": "push the built DB to this OCI repository, e.g. 127.0.0.1:5000/trivy/db (tag :2 added)",
        "out": "where to write db.tar.gz (default: the cache)",
        "seed": "regenerate the embedded mirror's DB from [scan].mirror_seed and publish it to [scan].db_repository",
        "import_": "import a downloaded DB bundle (the db.tar.gz of the trivy-db OCI artifact) into "
                   "[scan].db_repository (or --push REPO); later scans use it",
    },
)
@_cli
def trivy_db(c: Context, advisories: str = "", push: str = "", out: str = "", seed: bool = False,
             import_: str = "") -> None:
    """The Trivy DB mirror: import a real DB bundle (air gap), republish the embedded seed, or build one."""
    from pathlib import Path

    from pipeline.core.config import load_config
    from pipeline.core.errors import UsageError

    chosen = [n for n, v in (("--advisories", advisories), ("--seed", seed), ("--import", import_)) if v]
    if len(chosen) != 1:
        raise UsageError(f"trivy-db needs exactly one of --advisories, --seed, --import (got {len(chosen)})",
                         "e.g. `invoke trivy-db --import db.tar.gz` or `invoke trivy-db --seed`")
    if import_:
        from pipeline.local.trivydb.bundle import import_bundle
        from pipeline.tools.credentials import resolve

        cfg = load_config(check_files=False)
        repo = push or cfg.scan.db_repository
        if not repo:
            raise UsageError("no DB repository to import into", "set [scan].db_repository or pass --push REPO")
        creds = resolve(repo.split("/", 1)[0], cfg.registry.username_env, cfg.registry.password_env)
        info, pushed = import_bundle(Path(import_), repo, username=creds.username if creds else "",
                                     password=creds.password if creds else "")
        print(f"imported {info.line()}\npushed to {pushed}; the next scan fetches and uses it")
    elif seed:
        from pipeline.local.trivydb.seed import publish_seed

        print(f"published to {publish_seed(load_config(check_files=False), print)}")
    else:
        from pipeline.local.trivydb import make_mirror
        from pipeline.tools.credentials import resolve

        creds = None
        if push:
            cfg = load_config(check_files=False)
            creds = resolve(push.split("/", 1)[0], cfg.registry.username_env, cfg.registry.password_env)
        make_mirror(Path(advisories), push=push, out=Path(out) if out else None,
                    username=creds.username if creds else "", password=creds.password if creds else "")


@task(name="sbom-attach", iterable=["service"],
      help={"service": "service whose SBOM to attach (repeatable)", "env": ENV_HELP})
@_cli
def sbom_attach(c: Context, service: list[str] | None = None, env: str = "") -> None:
    """Attach each pushed image's CycloneDX SBOM (from the scan stage) to it in the registry (OCI artifact)."""
    from pipeline.release.runner import open_run
    from pipeline.stages.sbom import attach_sboms

    cfg, environment, reporter = _setup(env)
    with open_run(cfg, environment, reporter, services=_list(service), creates_manifest=False) as ctx:
        attach_sboms(cfg, ctx.manifest, reporter, ctx.services or None,
                     infra_of=None if ctx.services else environment)


# ---------------------------------------------------------------- registry, push, promote

@task(name="registry-up", help={"auth": "enable htpasswd auth", "tls": "serve TLS with a local CA"})
@_cli
def registry_up(c: Context, auth: bool = False, tls: bool = False) -> None:
    """Start the local OCI registry on 127.0.0.1:5000 (storage under the state directory)."""
    from pipeline.local.embedded_registry import registry_up as up

    up(_setup()[0], auth=auth, tls=tls)


@task(name="registry-down")
@_cli
def registry_down(c: Context) -> None:
    """Stop the local registry (its storage is kept)."""
    from pipeline.local.embedded_registry import registry_down as down

    down(_setup()[0])


@task(name="registry-status")
@_cli
def registry_status(c: Context) -> None:
    """Tell whether the local registry runs, where, and what it holds."""
    from pipeline.local.embedded_registry import registry_status as status_

    status_(_setup()[0])


@task(iterable=["service"], help={"service": "service to push (repeatable)", "env": ENV_HELP, "verbose": VERBOSE_HELP})
@_cli
def push(c: Context, service: list[str] | None = None, env: str = "", verbose: bool = False) -> None:
    """Push every tag of the built images, with retries; record each registry digest in the manifest."""
    _stages(["push"], env, service, verbose)


@task(iterable=["service"], help={"from_": "source environment", "to": "target environment",
                                  "service": "service to promote (repeatable)"})
@_cli
def promote(c: Context, from_: str = "", to: str = "", service: list[str] | None = None) -> None:
    """Copy the exact images (by digest) that passed in one environment to the next; no rebuild, no pull."""
    from pipeline.core.errors import UsageError
    from pipeline.release.promote import run_promote
    from pipeline.release.runner import open_run

    if not from_ or not to:   # checked here: invoke's own 'did not receive …' names the parameters, exit 1
        raise UsageError("promote needs --from ENV and --to ENV", "e.g. `invoke promote --from dev --to staging`")
    cfg, src, reporter = _setup(from_)
    dst = cfg.env(to)   # a bad --to is refused before the source's lock, manifest and run directory are touched
    with open_run(cfg, src, reporter, services=_list(service), creates_manifest=False) as ctx:
        run_promote(cfg, src, dst, ctx.manifest, reporter, ctx.services or None)


# ---------------------------------------------------------------- signing, provenance, the trust gate

@task(help={"env": ENV_HELP, "force": "replace an existing key pair (images it signed stop verifying)"})
@_cli
def keygen(c: Context, env: str = "", force: bool = False) -> None:
    """Make the environment's signing key pair (ECDSA P-256, encrypted; the passphrase from the variable
    pipeline.toml names) under [signing].key_dir/<env>/, outside the repository."""
    from pipeline.trust.envkeys import keygen as make

    cfg, environment, reporter = _setup(env)
    paths = make(cfg, environment, force=force)
    reporter.info(f"signing key of {environment.name}: {paths.private} (encrypted), public key {paths.public}")


@task(iterable=["service"], help={"service": "service to sign (repeatable)", "env": ENV_HELP})
@_cli
def sign(c: Context, service: list[str] | None = None, env: str = "") -> None:
    """Sign every pushed digest with the environment's key; attach SLSA provenance and VEX (tag schema)."""
    _stages(["sign"], env, service)


@task(name="verify-images", iterable=["service"],
      help={"service": "service to check (repeatable)", "env": ENV_HELP})
@_cli
def verify_images(c: Context, service: list[str] | None = None, env: str = "") -> None:
    """The trust gate: every image in the rendered manifests is signed by the environment's trusted key(s)
    and has provenance matching the Release manifest (digest, commit); exit 3 otherwise."""
    _stages(["verify-images"], env, service)


# ---------------------------------------------------------------- compose stack and smoke

@task(help={"env": ENV_HELP, "build": "build the images first"})
@_cli
def up(c: Context, env: str = "", build: bool = False) -> None:
    """Start the whole platform with docker compose for development."""
    from pipeline.local.stack import stack_up

    cfg, environment, reporter = _setup(env, sources=build)
    if build:   # the build stage first, through the runner (pipeline.local sits below the release layer)
        from pipeline.contract.options import RunOptions
        from pipeline.release.runner import run_command

        run_command(cfg, environment, ["build"], reporter, options=RunOptions(fail_fast=True))
    stack_up(cfg, environment, reporter)


@task(help={"volumes": "also remove the named volumes"})
@_cli
def down(c: Context, volumes: bool = False) -> None:
    """Stop the development stack."""
    from pipeline.local.stack import stack_down

    cfg, _env, reporter = _setup()
    stack_down(cfg, reporter, volumes=volumes)


@task(help={"service": "only this service", "follow": "follow the logs"})
@_cli
def logs(c: Context, service: str = "", follow: bool = False) -> None:
    """Show the development stack's logs."""
    from pipeline.local.stack import stack_logs

    cfg, _env, _reporter = _setup()
    stack_logs(cfg, service=service or None, follow=follow)


WAIT_TIMEOUT_HELP = "seconds the smoke test waits for the stack to be healthy (default, or 0: 120)"
DEPLOY_TIMEOUT_HELP = "seconds Helm waits for the rollout (default, or 0: 300)"


def _paths(values: list[str] | None) -> tuple[Any, ...]:
    from pathlib import Path

    return tuple(Path(p).resolve() for p in _list(values))


@task(iterable=["compose_override"],
      help={"env": ENV_HELP, "keep_on_failure": "leave the stack up when it fails (debugging)",
            "compose_override": "an extra compose file (repeatable; printed, recorded; refused where the "
                                "environment requires a clean tree)",
            "wait_timeout": WAIT_TIMEOUT_HELP})
@_cli
def smoke(c: Context, env: str = "", keep_on_failure: bool = False, compose_override: list[str] | None = None,
          wait_timeout: float = 0.0) -> None:
    """Smoke-test the exact images of the manifest: compose up, wait healthy, probe, always tear down (exit 4)."""
    _stages(["smoke"], env, keep_on_failure=keep_on_failure, compose_overrides=_paths(compose_override),
            smoke_wait_s=wait_timeout or None)


# ---------------------------------------------------------------- cluster and deploy

@task(name="cluster-up", help={"env": "environment whose kube context to use (default: local)"})
@_cli
def cluster_up(c: Context, env: str = "") -> None:
    """Use the environment's kube context, or provision the local single-node Kubernetes offline."""
    from pipeline.core.progress import reporter_progress
    from pipeline.local.cluster import cluster_up as up_

    _cfg, environment, reporter = _setup(env)
    try:
        up_(environment, say=reporter.info, progress=reporter_progress(reporter, "cluster"))
    finally:
        reporter.run_closed("done")


@task(name="cluster-down")
@_cli
def cluster_down(c: Context) -> None:
    """Stop the local cluster and restore the machine (processes, containers, mounts, iptables, sysctls)."""
    from pipeline.local.cluster import cluster_down as down_

    down_()


@task(name="cluster-status")
@_cli
def cluster_status(c: Context) -> None:
    """Tell what runs in the local cluster, since when, the versions, and the kubeconfig path."""
    from pipeline.local.cluster import cluster_status as status_

    status_()


@task(iterable=["service"], help={"env": ENV_HELP, "service": "service to deploy (repeatable)",
                                  "dry_run": "render and validate, change nothing", "verbose": VERBOSE_HELP,
                                  "deploy_timeout": DEPLOY_TIMEOUT_HELP})
@_cli
def deploy(c: Context, env: str = "", service: list[str] | None = None, dry_run: bool = False,
           verbose: bool = False, deploy_timeout: int = 0) -> None:
    """helm upgrade --install by digest, wait, verify each service, roll back on failure (exit 5).

    Where the environment lists the `verify-images` gate, it runs first (exit 3 before any helm upgrade), then
    `migrate` where it is listed (a failing migration: exit 1 before any pod changes)."""
    _stages(["deploy"], env, service, verbose, dry_run=dry_run, deploy_timeout_s=deploy_timeout or None)


@task(iterable=["service"], help={"env": ENV_HELP, "service": "service to verify (repeatable)"})
@_cli
def verify(c: Context, env: str = "", service: list[str] | None = None) -> None:
    """Re-verify what runs: the manifest's digests, rolled out, Ready, answering and passing the services' functional
    checks (pipeline.toml `checks`; exit 5 naming what failed, rolled back)."""
    _stages(["verify"], env, service)


@task(help={"env": ENV_HELP, "to": "revision to roll back to (default: the previous one)"})
@_cli
def rollback(c: Context, env: str = "", to: int = 0) -> None:
    """Roll the environment's Helm release back to a previous revision, only when each of its images is signed by
    the environment's trusted key(s) for its digest (exit 3 naming the first that is not; nothing changes)."""
    from pipeline.stages.deploy import rollback_release

    cfg, environment, reporter = _setup(env)
    rollback_release(cfg, environment, to or None, reporter=reporter)


@task(help={"env": ENV_HELP, "to": "the Helm revision whose backup to restore (taken while it was serving)",
            "yes": "do not ask for confirmation on a confirm = true environment (CI=true does not skip it)"})
@_cli
def restore(c: Context, env: str = "", to: int = 0, yes: bool = False) -> None:
    """Restore the database to the backup taken while revision --to was serving (pg_restore, one transaction) and
    roll the release back to that revision when it does not serve it. Every write since the backup is lost."""
    from pipeline.stages.restore import restore_database

    cfg, environment, reporter = _setup(env)
    restore_database(cfg, environment, to, yes=yes, reporter=reporter)


@task(help={"env": ENV_HELP, "json": "machine-readable output"})
@_cli
def status(c: Context, env: str = "", json: bool = False) -> None:
    """What runs per service: exit 0 only when it is exactly the manifest's digests, Ready; else exit 7."""
    from pipeline.stages.deploy.commands import run_status

    cfg, environment, reporter = _setup(env)
    run_status(cfg, environment, as_json=json, reporter=reporter)


@task(help={"env": ENV_HELP})
@_cli
def audit(c: Context, env: str = "") -> None:
    """Re-scan what the environment runs now (the pods' image digests, observed in its namespace) against the
    DB the mirror serves now; a table, differences from the manifest, a report in .pipeline/<env>/reports/audit.json;
    exit 3 on findings at the environment's threshold (ignore file applied), 0 when clean, 2 on bad input."""
    from pipeline.release.audit import run_audit

    cfg, environment, reporter = _setup(env)
    run_audit(cfg, environment, reporter)


# ---------------------------------------------------------------- release

@task(help={"env": ENV_HELP, "open": "also open it in the default browser", "history": "the history page instead"})
@_cli
def report(c: Context, env: str = "", open: bool = False, history: bool = False) -> None:
    """Print the path of the latest HTML run report of an environment (or of its history page)."""
    from pipeline.core.config import load_config
    from pipeline.core.vocab import DEFAULT_ENV
    from pipeline.release.html_report import HISTORY_FILE, latest_report

    cfg = load_config(check_files=False)
    environment = cfg.env(env or DEFAULT_ENV)
    path = latest_report(cfg.state_dir, environment.name)
    path = path.parent.parent / HISTORY_FILE if history else path
    print(path)
    if open:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            print(f"no browser to open it with; open {path.as_uri()}", file=sys.stderr)


@task(
    help={
        "env": ENV_HELP,
        "service": "restrict to these services (repeatable)",
        "dry_run": "print the whole plan, change nothing",
        "yes": "do not ask for confirmation (also when CI=true)",
        "fresh": "start over instead of resuming the last incomplete release",
        "compose_override": "an extra compose file for the smoke stage (repeatable; printed, recorded; refused "
                            "where the environment requires a clean tree)",
        "wait_timeout": WAIT_TIMEOUT_HELP,
        "deploy_timeout": DEPLOY_TIMEOUT_HELP,
        "verbose": "stream the tools' output",
    },
    iterable=["service", "compose_override"],
)
@_cli
def release(c: Context, env: str = "", service: list[str] | None = None, dry_run: bool = False,
            yes: bool = False, fresh: bool = False, compose_override: list[str] | None = None,
            wait_timeout: float = 0.0, deploy_timeout: int = 0, verbose: bool = False) -> None:
    """The environment's stages in its order (build → … → deploy → verify); resumable, locked, reported."""
    from pipeline.contract.options import RunOptions
    from pipeline.release.release import run_release

    options = RunOptions(compose_overrides=_paths(compose_override), smoke_wait_s=wait_timeout or None,
                         deploy_timeout_s=deploy_timeout or None)
    cfg, environment, reporter = _setup(env, verbose, sources=True)
    run_release(cfg, environment, reporter, services=_list(service), dry_run=dry_run, yes=yes, fresh=fresh,
                options=options)
