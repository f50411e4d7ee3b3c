"""The BuildKit path on the real engine with real Go builds: one changed file rebuilds one service, reusing
the compiler cache, and the plan says why ("main.go modified", "build arg GREETING changed")."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.release.runner import run_command
from pipeline.stages.build import dry_run_plan
from pipeline.tools import buildkit
from tests.integration.build_fixtures import MiniProject, remove_run_images

pytestmark = pytest.mark.engine

DOCKERFILE = """\
ARG GO_IMAGE=golang:1.22-bookworm
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod ./
COPY kit ./kit
COPY *.go ./
ARG GREETING=hello
ARG REVISION=unknown
RUN --mount=type=cache,id=veza-go-build,target=/root/.cache/go-build \\
    CGO_ENABLED=0 go build -v -trimpath -buildvcs=false -ldflags "-X main.greeting=${GREETING}" -o /out/app .
FROM scratch
COPY --from=build /out/app /app
ENTRYPOINT ["/app"]
"""

CONFIG = """
[project]
name = "gomini"
source_url = "https://example.invalid/gomini"

[registry]
address = "127.0.0.1:5999"
namespace = "gomini-{run}"

[build]
builder = "buildkit"

[bases.golang]
upstream = "{upstream}"
local = "{local}"
recipe = "golang"
build_arg = "GO_IMAGE"

[[services]]
name = "alpha"
context = "services/alpha"
dockerfile = "dockerfiles/go.Dockerfile"
port = 9101
bases = ["golang"]

[[services]]
name = "beta"
context = "services/beta"
dockerfile = "dockerfiles/go.Dockerfile"
port = 9102
bases = ["golang"]
build_args = {{ GREETING = "hi" }}

[environments.dev]
namespace = "gomini-dev"
values_file = "values.yaml"
stages = ["build"]
tags = ["sha"]
"""

MAIN = 'package main\n\nimport (\n\t"fmt"\n\t"gomini/{svc}/kit"\n)\n\nvar greeting = "x"\n\n' \
       'func main() {{ fmt.Println(greeting, kit.Marker) }}\n'


@pytest.fixture
def go_project(tmp_path: Path, docker_client: object) -> Iterator[MiniProject]:

    from pipeline.local.bases import ensure_bases

    main_cfg = load_config()
    ensure_bases(config=main_cfg, say=lambda _line: None)
    base = main_cfg.bases["golang"]
    run = "g" + uuid.uuid4().hex[:8]
    proj = MiniProject(tmp_path / "gomini", run)
    proj.root.mkdir()
    proj.write("pipeline.toml", CONFIG.format(run=run, upstream=base.upstream, local=base.local))
    proj.write("dockerfiles/go.Dockerfile", DOCKERFILE)
    for svc in ("alpha", "beta"):
        proj.write(f"services/{svc}/go.mod", f"module gomini/{svc}\n\ngo 1.19\n")
        proj.write(f"services/{svc}/main.go", MAIN.format(svc=svc))
        # A marker unique to this run: the first build must compile kit (no earlier cache entry can hold it).
        proj.write(f"services/{svc}/kit/kit.go", f'package kit\n\nconst Marker = "{run}-{svc}"\n')
        proj.write(f"services/{svc}/.dockerignore", "*\n!go.mod\n!*.go\n!kit/\n")
    proj.init_repo()
    proj.commit("feat: initial")
    yield proj
    remove_run_images(run)


def _run(p: MiniProject, services: list[str] | None = None) -> list[str]:
    """`invoke build --verbose` through the runner; the reporter's lines (steps included)."""
    lines: list[str] = []
    cfg = p.config
    run_command(cfg, cfg.env("dev"), ["build"], PlainReporter(verbose=True, sink=lines.append),
                services=services or [])
    return lines


def _manifest(p: MiniProject) -> Manifest:
    return Manifest.load(p.root / ".pipeline/dev/manifest.json")


def _build(p: MiniProject) -> dict[str, str]:
    _run(p)
    m = _manifest(p)
    return {n: str(b.status) for n in m.services() if (b := m.built(n)) is not None}


def _compiled(log: str) -> set[str]:
    """Packages `go build -v` compiled (printed as BuildKit step output: `#N 1.234 gomini/alpha/kit`)."""
    return set(re.findall(r"^#\d+ \d+\.\d+ (gomini/\S+)$", log, re.MULTILINE))


def test_one_file_change_rebuilds_one_service_with_the_compiler_cache(go_project: MiniProject) -> None:
    p = go_project
    assert buildkit.detect("buildkit").kind == "buildkit"
    assert _build(p) == {"alpha": "built", "beta": "built"}
    m = _manifest(p)
    first_log = Path(m.service("alpha")["build"]["log"]).read_text()
    assert _compiled(first_log) == {"gomini/alpha", "gomini/alpha/kit"}
    assert m.service("alpha")["build"]["why"] == "no earlier build recorded"

    p.write("services/alpha/main.go", MAIN.format(svc="alpha").replace('"x"', '"y"'))
    p.commit("fix(alpha): one line")
    lines = _run(p)
    m = _manifest(p)
    assert {n: str(b.status) for n in m.services() if (b := m.built(n))} == {"alpha": "built", "beta": "reused"}
    assert m.service("alpha")["build"]["why"] == "main.go modified"
    assert any("alpha | built" in ln and "rebuilt: main.go modified" in ln for ln in lines), lines
    log = Path(m.service("alpha")["build"]["log"]).read_text()
    # The layer cache: the steps before the changed file are CACHED in the second build's log ...
    for step in ("COPY go.mod ./", "COPY kit ./kit"):
        assert re.search(rf"^#(\d+) \[build \d/\d\] {re.escape(step)}\n(?:#\1 .*\n)*?#\1 CACHED$", log, re.MULTILINE)
        assert any(ln.startswith("  alpha: [build ") and ln.endswith(f"] {step} — cached") for ln in lines), lines
    # ... and the compiler cache (a cache mount): the RUN step ran again, but only main was compiled.
    assert _compiled(log) == {"gomini/alpha"}


def test_build_arg_change_is_named(go_project: MiniProject) -> None:
    p = go_project
    _build(p)
    text = (p.root / "pipeline.toml").read_text().replace('GREETING = "hi"', 'GREETING = "bonjour"')
    p.write("pipeline.toml", text)
    p.commit("chore: greeting")
    assert _build(p) == {"alpha": "reused", "beta": "built"}
    assert _manifest(p).service("beta")["build"]["why"] == "build arg GREETING changed"


def test_dry_run_says_why(go_project: MiniProject) -> None:
    p = go_project
    _build(p)
    p.write("services/beta/kit/extra.go", "package kit\n\nconst Extra = 1\n")
    lines: list[str] = []
    cfg = p.config
    plan = dry_run_plan(cfg, cfg.env("dev"), [], PlainReporter(sink=lines.append))
    assert {s.name: (s.action, s.why) for s in plan.services} == {
        "alpha": ("reuse", "unchanged"), "beta": ("build", "kit/extra.go added")}
    assert lines[0].startswith("builder: BuildKit (docker CLI, DOCKER_BUILDKIT=1)")
    # the reason, then (no registry answers here) what the registry reuse lookup found
    assert any(ln.startswith("  beta | ") and " | rebuild | kit/extra.go added" in ln for ln in lines), lines


def test_failure_shows_the_failing_steps_last_lines(go_project: MiniProject) -> None:
    from pipeline.core.errors import StageFailed

    p = go_project
    p.write("services/alpha/main.go", "package main\n\nfunc main() { undefinedCall() }\n")
    p.commit("fix(alpha): broken")
    lines: list[str] = []
    cfg = p.config
    with pytest.raises(StageFailed) as info:
        run_command(cfg, cfg.env("dev"), ["build"], PlainReporter(sink=lines.append), services=["alpha"])
    assert "build failed for alpha" in info.value.message
    head = [i for i, ln in enumerate(lines) if ln.startswith("alpha: [build 6/6] RUN --mount=type=cache")]
    assert head and "failed (full log: " in lines[head[0]], lines
    failing = [ln for ln in lines[head[0] + 1:] if ln.startswith("  │ ")]
    assert any("undefined: undefinedCall" in ln for ln in failing), lines
    assert 0 < len(failing) <= 20
    m = _manifest(p)
    assert m.service("alpha")["build"]["status"] == "failed"
    assert "undefined: undefinedCall" in Path(m.service("alpha")["build"]["log"]).read_text()
