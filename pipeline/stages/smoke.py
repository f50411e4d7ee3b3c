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
import os
import secrets
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

from pipeline.core.config import Config, Environment, Probe, Service
from pipeline.core.errors import Interrupted, PipelineError, SmokeFailed, UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import LABEL_RUN as RUN_LABEL
from pipeline.local import stack_spec
from pipeline.release.stage import RunContext, StageSummary
from pipeline.stages.probes import HttpAnswer, NatsError, NatsSubscriber, http
from pipeline.tools.compose import (
    ComposeProject,
    ContainerState,
    health_summary,
)
from pipeline.tools.docker import container_state, remove_labelled

DEFAULT_WAIT_TIMEOUT_S = 120.0
DEFAULT_PROBE_WINDOW_S = 8.0     # a probe is retried this long before it counts as failed
LOG_TAIL = 200
# Smoke-only timings: check health every second (a healthy stack is seen at once); a dependency that
# starts slowly on a busy machine still has start_period to come up before failed checks count.
SMOKE_VARIABLES = {"VEZA_HEALTH_INTERVAL": "1s", "VEZA_HEALTH_START_PERIOD": "60s", "VEZA_RESTART": "no"}


@dataclass
class Check:
    service: str
    name: str
    ok: bool
    expected: str
    got: str
    duration_s: float

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"  {mark} {self.service:<20} {self.name:<34} {self.got if not self.ok else ''}".rstrip()


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
    run_id = stack_spec.safe_run_id(run_id)
    result = SmokeResult(run_id=run_id, project=f"veza-smoke-{run_id}", run_dir=run_dir,
                         overrides=tuple(overrides))
    check_overrides(env, overrides)
    if overrides:
        say(f"smoke: extra compose files (--compose-override): {', '.join(map(str, overrides))}")

    # Everything that can be refused is refused before anything exists in the engine.
    images = stack_spec.service_images(cfg, manifest)
    infra = stack_spec.infra_images(cfg)
    result.images = {name: c.ref for name, c in {**images, **infra}.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    variables = stack_spec.stack_variables(run_id, {**images, **infra}, stack_spec.new_secrets(), SMOKE_VARIABLES)
    env_file = stack_spec.write_env_file(run_dir / "compose.env", variables)
    project = ComposeProject(
        name=result.project,
        files=(stack_spec.BASE_FILE, stack_spec.SMOKE_FILE, *overrides),
        env_file=env_file,
        workdir=stack_spec.COMPOSE_DIR,
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
            result.checks = _run_checks(cfg, project, run_id, probe_window)
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

def _explain_up_failure(project: ComposeProject, compose_err: str, wait_timeout: float) -> str:
    """The precise reason the stack did not become healthy, from the engine's view of each container."""
    try:
        states = project.ps()
    except PipelineError:
        states = []
    by_service = {s.service: s for s in states}
    crashed = [s for s in states if s.state in ("exited", "dead") or (s.state == "restarting")]
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


# ---------------------------------------------------------------- checks

def _endpoints(project: ComposeProject) -> dict[tuple[str, int], tuple[str, int]]:
    """(compose service, container port) → (host, published port), read once from `compose ps`."""
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for s in project.ps():
        for target, host, published in s.publishers:
            if published:
                out[(s.service, target)] = (host or "127.0.0.1", published)
    return out


def _retry(window: float, attempt: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    deadline = time.monotonic() + window
    while True:
        ok, got = attempt()
        if ok or time.monotonic() >= deadline:
            return ok, got
        time.sleep(0.3)


def _run_checks(cfg: Config, project: ComposeProject, run_id: str, window: float) -> list[Check]:
    ends = _endpoints(project)
    checks: list[Check] = []
    for svc in cfg.services:
        key = (stack_spec.compose_service(svc.name), svc.port)
        if key not in ends:
            states: list[ContainerState] = project.ps()
            checks.append(Check(svc.name, f"port {svc.port}", False, "a published port",
                                f"not published (containers: {[(s.service, s.state) for s in states]})", 0.0))
            continue
        host, port = ends[key]
        base = f"http://{host}:{port}"
        for probe in svc.probes:
            checks.append(_probe(svc, base, probe, window))
        for check in svc.smoke_checks:
            checks.append(CHECKS[check.kind](svc, base + check.path, ends, run_id, window))
    return checks


def _timed(service: str, name: str, expected: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    t0 = time.monotonic()
    ok, got = fn()
    return Check(service, name, ok, expected, got, round(time.monotonic() - t0, 3))


def _probe(svc: Service, base: str, p: Probe, window: float) -> Check:
    expected = f"HTTP {p.status}" + (f" with body containing {p.body_contains!r}" if p.body_contains else "")

    def attempt() -> tuple[bool, str]:
        a = http(p.method, base + p.path)
        ok = a.status == p.status and (p.body_contains in a.text if p.body_contains else True)
        return ok, a.summary()

    return _timed(svc.name, f"{p.method} {p.path}", expected, lambda: _retry(window, attempt))


def _check_ready(svc: Service, url: str, _ends: Any, _run_id: str, window: float) -> Check:
    """ready-json: the URL reports {"ready": true}, i.e. the service's dependencies really answered it."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", url)
        try:
            ready = a.status == 200 and json.loads(a.body).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        return ready, a.summary()

    return _timed(svc.name, f"/{url.split('/', 3)[-1]} ready is true (deps answer)",
                  'HTTP 200 with JSON {"ready": true}', lambda: _retry(window, attempt))


def _check_nats_publish(svc: Service, url: str, ends: dict[tuple[str, int], tuple[str, int]], run_id: str,
                        window: float) -> Check:
    """nats-publish: a message POSTed to the URL is observed on NATS by our own subscriber."""
    token = f"smoke-{run_id}-{secrets.token_hex(4)}"
    expected = f"the posted message ({token}) published on NATS"
    nats = ends.get(("nats", 4222))
    if nats is None:
        return Check(svc.name, "POST → NATS", False, expected, "NATS port 4222 is not published", 0.0)

    def run() -> tuple[bool, str]:
        try:
            with NatsSubscriber(nats[0], nats[1], ">", timeout=5) as sub:
                answer: list[HttpAnswer] = []

                def post() -> tuple[bool, str]:
                    answer[:] = [http("POST", url, body=token.encode(),
                                      headers={"Content-Type": "text/plain; charset=utf-8"})]
                    a = answer[0]
                    return 200 <= a.status < 300 and token in a.text, a.summary()

                posted, got_post = _retry(window, post)
                if not posted:
                    return False, f"POST {url} answered {got_post}"
                seen = sub.wait_for(token.encode(), timeout=5)
                if seen is None:
                    return False, "POST /messages succeeded but no message carrying it reached NATS within 5s"
                claimed = _json_field(answer[0].body, "subject")
                if claimed and claimed != seen[0]:
                    return False, f"chat-server said it published on {claimed!r} but NATS delivered it on {seen[0]!r}"
                return True, f"seen on NATS subject {seen[0]}"
        except NatsError as exc:
            return False, str(exc)

    return _timed(svc.name, "POST → NATS", expected, run)


def _json_field(body: bytes, key: str) -> str:
    try:
        value = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _check_blob_roundtrip(svc: Service, url: str, _ends: Any, run_id: str, window: float) -> Check:
    """blob-roundtrip: PUT to the URL ({id} = a fresh id) then GET returns the same bytes."""
    data = secrets.token_bytes(48 * 1024)
    url = url.replace("{id}", f"smoke-{run_id}")

    def attempt() -> tuple[bool, str]:
        put = http("PUT", url, body=data, headers={"Content-Type": "application/octet-stream"})
        if not 200 <= put.status < 300:
            return False, f"PUT answered {put.summary()}"
        got = http("GET", url)
        if got.status != 200:
            return False, f"GET answered {got.summary()}"
        if got.body != data:
            return False, f"GET returned {len(got.body)} bytes that differ from the {len(data)} bytes stored"
        return True, f"{len(data)} bytes round-tripped"

    return _timed(svc.name, "PUT+GET round trip", f"the same {len(data)} bytes back",
                  lambda: _retry(window, attempt))


def _check_html_index(svc: Service, url: str, _ends: Any, _run_id: str, window: float) -> Check:
    """html-index: the URL serves an HTML page."""

    def attempt() -> tuple[bool, str]:
        a = http("GET", url)
        ok = a.status == 200 and "html" in a.content_type.lower() and "<html" in a.text.lower()
        return ok, a.summary() + (f", content-type {a.content_type!r}" if a.status == 200 and not ok else "")

    return _timed(svc.name, "GET serves an HTML index", "HTTP 200, text/html with <html>",
                  lambda: _retry(window, attempt))


# The kinds a service lists in pipeline.toml (`smoke_checks`); see pipeline.core.config.SMOKE_CHECK_KINDS.
CHECKS: dict[str, Callable[[Service, str, dict[tuple[str, int], tuple[str, int]], str, float], Check]] = {
    "ready-json": _check_ready,
    "nats-publish": _check_nats_publish,
    "blob-roundtrip": _check_blob_roundtrip,
    "html-index": _check_html_index,
}


# ---------------------------------------------------------------- manifest

def _record(manifest: Manifest, cfg: Config, result: SmokeResult) -> None:
    for svc in cfg.services:
        mine = [c for c in result.checks if c.service == svc.name]
        if result.status == "pass" or (mine and all(c.ok for c in mine)):
            status = "pass"
        elif result.status == "interrupted":
            status = "not_run"
        else:
            status = "fail"   # a failed check, or the stack failed before any probe reached it
        manifest.record(svc.name, "smoke", {
            "status": status, "run_id": result.run_id, "image": result.images.get(svc.name, ""),
            "checks": [{"name": c.name, "ok": c.ok, **({} if c.ok else {"got": c.got, "expected": c.expected})}
                       for c in mine],
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


class SmokeStage:
    """The exact images of the manifest under docker compose, probed, always torn down (exit 4)."""

    name = "smoke"

    def skip(self, ctx: RunContext) -> str | None:
        return None

    def preflight(self, ctx: RunContext) -> None:
        check_overrides(ctx.env, ctx.options.get("compose_overrides", ()))

    def holds(self, ctx: RunContext) -> str | None:
        """The recorded smoke test ran these exact images (and no extra compose file)."""
        rec = ctx.manifest.stage("smoke") or {}
        if rec.get("compose_overrides"):
            return "the recorded smoke test used extra compose files"
        images = {n: c.ref for n, c in stack_spec.service_images(ctx.cfg, ctx.manifest).items()}
        tested = rec.get("images") or {}
        changed = [n for n, ref in images.items() if tested.get(n) != ref]
        return f"{', '.join(changed)} changed since the recorded smoke test" if changed else None

    def run(self, ctx: RunContext) -> StageSummary:
        wait = float(os.environ.get("VEZA_SMOKE_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT_S))
        result = smoke_release(ctx.cfg, ctx.env, ctx.manifest, ctx.run_dir / "smoke", ctx.reporter, run_id=ctx.run_id,
                               keep_on_failure=bool(ctx.options.get("keep_on_failure")),
                               overrides=tuple(ctx.options.get("compose_overrides", ())), wait_timeout=wait)
        t = result.timings
        return StageSummary(f"up {t.get('up_s', 0):.1f}s, probes {t.get('probes_s', 0):.1f}s", summary_fields(result))
