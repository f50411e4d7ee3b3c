"""The smoke stage: run the exact images of the Release manifest as one compose stack and probe them.

One run = one compose project `veza-smoke-<run id>` with ephemeral loopback ports (so concurrent runs
never collide), every object labelled veza.pipeline.run=<run id>. Flow: resolve images → write the run's
env file (0600) → `up --wait` → the probes of pipeline.toml + functional checks → teardown.
Teardown always happens (success, failure, timeout, Ctrl-C, SIGTERM) unless keep_on_failure is asked for
a failing run; it is `compose down --volumes` followed by an engine-side sweep of the run's label.
A failure names the probe, what it got, and saves every service's last logs under the run directory.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, Environment
from pipeline.core.errors import Interrupted, PipelineError, SmokeFailed, StageFailed, UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.names import safe_run_id
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import LABEL_RUN as RUN_LABEL
from pipeline.core.vocab import SmokeStatus
from pipeline.local import stack_spec
from pipeline.stages.functional_checks import Check, run_checks
from pipeline.tools import docker
from pipeline.tools.compose import (
    ComposeProject,
    health_summary,
)
from pipeline.tools.docker import container_state, remove_labelled
from pipeline.tools.registry_clients import registry_credentials

DEFAULT_WAIT_TIMEOUT_S = 120.0
PULL_TIMEOUT_S = 600.0            # one image reused from the registry, pulled by digest before the stack starts
DEFAULT_PROBE_WINDOW_S = 8.0     # a probe is retried this long before it counts as failed
LOG_TAIL = 200
# Smoke-only timings: check health every second (a healthy stack is seen at once); a dependency that
# starts slowly on a busy machine still has start_period to come up before failed checks count.
SMOKE_VARIABLES = {"VEZA_HEALTH_INTERVAL": "1s", "VEZA_HEALTH_START_PERIOD": "60s", "VEZA_RESTART": "no"}


@dataclass
class SmokeResult:
    run_id: str
    project: str
    run_dir: Path
    status: str = "running"            # pass | fail | interrupted
    failure: str = ""
    checks: list[Check] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    logs_dir: Path | None = None
    kept: bool = False
    leftovers: str = ""
    overrides: tuple[Path, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d["logs_dir"] = str(self.logs_dir) if self.logs_dir else None
        d["overrides"] = [str(o) for o in self.overrides]
        return d


def check_overrides(env: Environment, overrides: Sequence[Path]) -> None:
    """Extra compose files change what is smoke-tested: refused where the environment requires a clean tree."""
    for o in overrides:
        if not o.is_file():
            raise UsageError(f"compose override file {o} does not exist", "fix the --compose-override path")
    if overrides and env.require_clean_tree:
        raise UsageError(f"--compose-override is refused for {env.name}: it requires a clean tree, and extra "
                         "compose files could swap the image that is smoke-tested",
                         "smoke-test the release as committed (drop --compose-override)")


def smoke_release(
    cfg: Config,
    env: Environment,
    manifest: Manifest,
    run_dir: Path,
    reporter: Reporter,
    *,
    run_id: str,
    keep_on_failure: bool = False,
    overrides: Sequence[Path] = (),
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S,
    probe_window: float = DEFAULT_PROBE_WINDOW_S,
) -> SmokeResult:
    """Run the exact images of the manifest as one compose stack, probe them, always tear it down.

    run_dir: this smoke run's directory (logs, env file, smoke.json); run_id labels every engine object.
    overrides: extra compose files (an explicit flag of `invoke smoke`/`release`, printed and recorded).
    Records each service's `smoke` record. Raises SmokeFailed (exit 4) with the stage fields attached.
    """
    say = reporter.info
    run_id = safe_run_id(run_id)
    result = SmokeResult(run_id=run_id, project=f"veza-smoke-{run_id}", run_dir=run_dir,
                         overrides=tuple(overrides))
    check_overrides(env, overrides)
    if overrides:
        say(f"smoke: extra compose files (--compose-override): {', '.join(map(str, overrides))}")

    # Everything that can be refused is refused before anything exists in the engine.
    images = stack_spec.service_images(cfg, manifest)
    infra = stack_spec.infra_images(cfg)
    result.images = {name: c.ref for name, c in {**images, **infra}.items()}
    pull_reused(images, say, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    variables = stack_spec.stack_variables(run_id, {**images, **infra}, stack_spec.new_secrets(), SMOKE_VARIABLES)
    env_file = stack_spec.write_env_file(run_dir / "compose.env", variables)
    project = ComposeProject(
        name=result.project,
        files=(stack_spec.compose_dir(cfg) / stack_spec.BASE_NAME, stack_spec.compose_dir(cfg) / stack_spec.SMOKE_NAME,
               *overrides),
        env_file=env_file,
        workdir=stack_spec.compose_dir(cfg),
        # Also in compose's process environment: a shell variable (e.g. an exported BACKEND_API_IMAGE)
        # would otherwise win over the env file and smoke-test another image than the manifest's.
        env=variables,
    )
    project.config()   # validates the files and the variables before anything is created

    say(f"smoke {result.project}: starting the stack (health timeout {wait_timeout:.0f}s)")
    failed = True
    t_start = time.monotonic()
    try:
        with _terminate_as_interrupt():
            t0 = time.monotonic()
            up = project.up(wait_timeout=wait_timeout)
            result.timings["up_s"] = round(time.monotonic() - t0, 2)
            if not up.ok:
                raise SmokeFailed(_explain_up_failure(project, up.stderr or up.stdout, wait_timeout),
                                  f"see the logs in {run_dir / 'logs'}")
            say(f"smoke {result.project}: healthy in {result.timings['up_s']:.1f}s; probing")
            t0 = time.monotonic()
            result.checks = run_checks(cfg, project, run_id, probe_window, variables)
            result.timings["probes_s"] = round(time.monotonic() - t0, 2)
            for c in result.checks:
                say(c.line())
            bad = [c for c in result.checks if not c.ok]
            if bad:
                first = bad[0]
                more = f" (and {len(bad) - 1} more failed check(s))" if len(bad) > 1 else ""
                raise SmokeFailed(f"smoke probe failed: {first.service} {first.name}: expected {first.expected}, "
                                  f"got {first.got}{more}", f"see the logs in {run_dir / 'logs'}")
            failed = False
            result.status = "pass"
    except SmokeFailed as exc:
        result.status, result.failure = "fail", exc.message
        raise
    except (KeyboardInterrupt, Interrupted):
        result.status, result.failure = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
        raise
    except PipelineError as exc:
        result.status, result.failure = "fail", exc.message
        raise SmokeFailed(f"smoke stage failed: {exc.message}", exc.hint) from exc
    except Exception as exc:
        result.status, result.failure = "fail", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with _signals_deferred():
            if failed:
                result.logs_dir = _save_logs(project, run_dir)
            if failed and keep_on_failure and result.status != "interrupted":
                result.kept = True
                say(f"smoke {result.project}: kept for debugging. Tear it down with:\n  "
                    + " ".join(project.argv("down", "--volumes", "--remove-orphans")))
            else:
                t0 = time.monotonic()
                result.leftovers = _teardown(project, run_id)
                result.timings["down_s"] = round(time.monotonic() - t0, 2)
                env_file.unlink(missing_ok=True)   # its passwords belonged to the stack just removed
            result.timings["total_s"] = round(time.monotonic() - t_start, 2)
            _record(manifest, cfg, result)
            in_flight = sys.exc_info()[1]
            if isinstance(in_flight, PipelineError):   # the runner records these with the failed stage
                in_flight.record.update(summary_fields(result))
            (run_dir / "smoke.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if result.leftovers:
        raise SmokeFailed(f"smoke passed but teardown left objects behind: {result.leftovers}",
                          f"remove them: docker ps -a --filter label={RUN_LABEL}={run_id}")
    t = result.timings
    say(f"smoke {result.project}: passed — up {t.get('up_s', 0):.1f}s, probes {t.get('probes_s', 0):.1f}s, "
        f"down {t.get('down_s', 0):.1f}s")
    return result


# ---------------------------------------------------------------- failure diagnosis

def pull_reused(images: dict[str, stack_spec.StackImage], say: Callable[[str], None],
                cfg: Config | None = None) -> None:
    """Pull, by digest, the images the build reused from the registry that the engine does not have (compose runs
    only what the engine has), with the registry's credentials when `cfg` names them (registry_clients: a fresh
    runner has no `docker login`); StageFailed naming the image when the registry does not give it."""
    for name, image in images.items():
        if image.source != "manifest:registry" or docker.image_id(image.ref) is not None:
            continue
        say(f"smoke: pulling {image.ref} ({name}, reused from the registry by the build)")
        creds = registry_credentials(cfg, image.ref.split("/", 1)[0]) if cfg is not None else None
        ok, why = docker.pull_image(image.ref, timeout=PULL_TIMEOUT_S, username=creds.username if creds else "",
                                    password=creds.password if creds else "")
        if not ok:
            raise StageFailed(f"smoke: cannot pull {image.ref} for {name}: {why}",
                              f"check that the registry answers, or rerun `invoke build --service {name}`")


def _explain_up_failure(project: ComposeProject, compose_err: str, wait_timeout: float) -> str:
    """The precise reason the stack did not become healthy, from the engine's view of each container."""
    try:
        states = project.ps()
    except PipelineError:
        states = []
    by_service = {s.service: s for s in states}
    crashed = [s for s in states if (s.state in ("exited", "dead") or s.state == "restarting")
               and not (s.one_shot and s.state == "exited" and s.exit_code == 0)]   # a migrator that completed
    if crashed:
        s = crashed[0]
        tail = _last_log_line(project, s.service)
        return (f"smoke: service {s.service} exited with code {s.exit_code} while the stack was starting"
                + (f"; last log line: {tail}" if tail else ""))
    unhealthy = [s for s in states if s.health == "unhealthy"]
    if unhealthy:
        s = unhealthy[0]
        return (f"smoke: service {s.service} is unhealthy (its healthcheck failed): "
                f"{health_summary(container_state(s.name)) or 'no healthcheck output'}")
    starting = [s for s in states if s.health == "starting"]
    if starting:
        s = starting[0]
        why = health_summary(container_state(s.name))
        return (f"smoke: service {s.service} did not become healthy within {wait_timeout:.0f}s (still starting)"
                + (f"; last healthcheck: {why}" if why else ""))
    never = [s for s in states if s.state == "created"]
    if never:
        return f"smoke: service {never[0].service} was never started (a dependency failed)"
    expected = set(by_service)
    err = " ".join(compose_err.strip().splitlines()[-3:]) or "no output"
    return f"smoke: the stack did not start ({len(expected)} container(s) created): {err}"


def _last_log_line(project: ComposeProject, service: str) -> str:
    try:
        lines = [ln for ln in project.logs(service, tail=5).splitlines() if ln.strip()]
    except PipelineError:
        return ""
    if not lines:
        return ""
    # "<service>-1  | 2026-…Z message": keep the message.
    msg = lines[-1].split("|", 1)[-1].strip()
    stamp, _, rest = msg.partition(" ")
    if stamp[:4].isdigit() and stamp.endswith("Z") and rest:
        msg = rest
    return " ".join(msg.split())[:240]


def _save_logs(project: ComposeProject, run_dir: Path) -> Path | None:
    """Last logs of every service of the stack and the containers' states, under <run_dir>/logs/."""
    logs = run_dir / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        services = sorted(project.config().get("services", {}))
        for svc in services:
            (logs / f"{svc}.log").write_text(project.logs(svc, tail=LOG_TAIL))
        states = [asdict(s) | {"health_log": health_summary(container_state(s.name), last=5)}
                  for s in project.ps()]
        (logs / "containers.json").write_text(json.dumps(states, indent=2) + "\n")
    except (PipelineError, OSError) as exc:
        (logs / "error.txt").write_text(f"saving the logs failed: {exc}\n")
    return logs


def _teardown(project: ComposeProject, run_id: str) -> str:
    """compose down --volumes, then sweep what still carries the run's label. Returns leftovers ('' = none)."""
    try:
        project.down(volumes=True, stop_timeout=5)
    except PipelineError:
        pass   # the label sweep below removes what compose could not
    left = remove_labelled(RUN_LABEL, run_id)
    return "" if left.empty() else left.describe()


# ---------------------------------------------------------------- manifest

def _record(manifest: Manifest, cfg: Config, result: SmokeResult) -> None:
    for svc in cfg.services:
        mine = [c for c in result.checks if c.service == svc.name]
        if result.status == "pass" or (mine and all(c.ok for c in mine)):
            status = SmokeStatus.PASS
        elif result.status == "interrupted":
            status = SmokeStatus.NOT_RUN
        else:
            status = SmokeStatus.FAIL   # a failed check, or the stack failed before any probe reached it
        manifest.record(svc.name, "smoke", {
            "status": status, "run_id": result.run_id, "image": result.images.get(svc.name, ""),
            "checks": [c.record() for c in mine],
        })



def summary_fields(result: SmokeResult) -> dict[str, Any]:
    """What the runner records in `stages.smoke` (also on failure, through SmokeFailed.fields)."""
    return {"run_id": result.run_id, "project": result.project, "failure": result.failure,
            "timings": result.timings, "logs": str(result.logs_dir) if result.logs_dir else "",
            "kept": result.kept, "report": str(result.run_dir / "smoke.json"),
            "images": result.images, "compose_overrides": [str(o) for o in result.overrides]}


# ---------------------------------------------------------------- signals

@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises like Ctrl-C does, so the try/finally teardown runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise Interrupted("terminated by SIGTERM; the smoke stack was torn down")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Teardown must finish: ignore SIGINT/SIGTERM while it runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prev_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    prev_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev_int)
        signal.signal(signal.SIGTERM, prev_term)


class SmokeStage(BaseStage):
    """The exact images of the manifest under docker compose, probed, always torn down (exit 4)."""

    name = "smoke"

    def preflight(self, ctx: RunContext) -> None:
        check_overrides(ctx.env, ctx.options.compose_overrides)

    def holds(self, ctx: RunContext) -> str | None:
        """The recorded smoke test ran these exact images (and no extra compose file)."""
        rec = ctx.manifest.stage("smoke")
        if rec is not None and rec.fields.get("compose_overrides"):
            return "the recorded smoke test used extra compose files"
        images = {n: c.ref for n, c in stack_spec.service_images(ctx.cfg, ctx.manifest).items()}
        tested = (rec.fields.get("images") if rec is not None else None) or {}
        changed = [n for n, ref in images.items() if tested.get(n) != ref]
        return f"{', '.join(changed)} changed since the recorded smoke test" if changed else None

    def run(self, ctx: RunContext) -> StageSummary:
        wait = ctx.options.smoke_wait_s or DEFAULT_WAIT_TIMEOUT_S
        result = smoke_release(ctx.cfg, ctx.env, ctx.manifest, ctx.run_dir / "smoke", ctx.reporter, run_id=ctx.run_id,
                               keep_on_failure=ctx.options.keep_on_failure,
                               overrides=ctx.options.compose_overrides, wait_timeout=wait)
        t = result.timings
        return StageSummary(f"up {t.get('up_s', 0):.1f}s, probes {t.get('probes_s', 0):.1f}s", summary_fields(result))
