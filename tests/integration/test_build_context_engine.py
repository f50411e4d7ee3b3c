"""The input digest's file list equals what the engine receives: a table of ignore files, checked per builder.

For each case, a context-listing image (`FROM scratch` + `COPY . /ctx/`) is built by the real builder, its
filesystem exported, and the files under /ctx compared with `context_files()` under that builder's rules.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pipeline.core.errors import ToolMissing
from pipeline.stages.buildcontext import context_files, rules_for
from pipeline.tools import buildkit

pytestmark = pytest.mark.engine

TREE = ["go.mod", "main.go", "README.md", "internal/api/handler.go", "internal/api/notes.txt", "kit/kit.go",
        "kit/tmp/x.go", "a/b/tmp/deep.txt", "a/b/tmp/keep.txt", "build/out.bin", "docs/build/page.html",
        "scratch.tmp", "sub/scratch.tmp", "sub/.hidden"]

# (name, context .dockerignore or None, <Dockerfile>.dockerignore or None)
CASES = [
    ("no-ignore-file", None, None),
    ("issue-case", "*\n!go.mod\n!**/*.go\n", None),
    ("allow-list", "*\n!go.mod\n!*.go\n!kit/\n", None),
    ("leading-slash", "/build\n/sub/.hidden\n", None),
    ("double-star-dir", "**/build\n", None),
    ("double-star-files", "**/*.tmp\n.dockerignore\n", None),
    ("exception-inside-excluded-dir", "internal\n!internal/api/handler.go\n", None),
    ("trailing-glob-exception", "kit/**\n!kit/tmp\n", None),
    ("parent-depth", "**/tmp\n!a/b/tmp/keep.txt\n", None),
    ("comments-and-spaces", "# only comments\n\n  README.md  \n!  README.md\n*.tmp\n", None),
    ("dockerfile-specific-wins", "README.md\n", "*.tmp\n**/*.tmp\n"),
]


def _builders_here() -> list[str]:
    """The builder kinds this machine offers (collection time: a builder that is absent is not a test that
    skips, it is simply not among the cases; `test_the_builder_the_pipeline_picks_was_proven` then says
    whether the one the pipeline uses was covered)."""
    kinds = []
    for kind in buildkit.KINDS:
        try:
            buildkit.detect(kind)
        except ToolMissing:
            continue
        kinds.append(kind)
    return kinds


BUILDERS_HERE = _builders_here()
PROVEN: set[str] = set()   # the kinds whose case passed in this session


def _engine_files(builder: buildkit.Builder, ctx: Path, dockerfile: Path, work: Path, run_id: str,
                   docker_client: object) -> list[str]:
    iid = work / "iid"
    lines: list[str] = []
    rc = buildkit.build(builder, context=ctx, dockerfile=dockerfile, tags=[], build_args={},
                        labels={"veza.pipeline.run": run_id}, no_cache=False, on_line=lines.append,
                        timeout=300, iidfile=iid)
    assert rc == 0, "\n".join(lines[-20:])
    image = iid.read_text().strip()
    api = docker_client.api  # type: ignore[attr-defined]
    container = api.create_container(image, command=["x"], labels={"veza.pipeline.run": run_id})
    try:
        data = b"".join(api.export(container["Id"]))
    finally:
        api.remove_container(container["Id"], force=True, v=True)
        api.remove_image(image, force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return sorted(m.name.removeprefix("ctx/") for m in tf.getmembers()
                      if m.name.startswith("ctx/") and (m.isfile() or m.issym()))


@pytest.mark.parametrize("kind", BUILDERS_HERE)
def test_context_file_list_equals_what_the_engine_receives(kind: str, tmp_path: Path, run_id: str,
                                                           docker_client: object) -> None:
    builder = buildkit.detect(kind)
    rules = rules_for(builder.kind)
    mismatches = {}
    for name, ignore, specific in CASES:
        case = tmp_path / name
        ctx = case / "ctx"
        for rel in TREE:
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            (ctx / rel).write_text(rel + "\n")
        (ctx / "link").symlink_to("kit")
        if ignore is not None:
            (ctx / ".dockerignore").write_text(ignore)
        dockerfile = case / "dockerfiles" / "list.Dockerfile"
        dockerfile.parent.mkdir()
        dockerfile.write_text("FROM scratch\nCOPY . /ctx/\n")
        if specific is not None:
            dockerfile.with_name("list.Dockerfile.dockerignore").write_text(specific)
        expected = context_files(ctx, dockerfile, rules)
        got = _engine_files(builder, ctx, dockerfile, case, run_id, docker_client)
        if got != expected:
            mismatches[name] = {"engine only": sorted(set(got) - set(expected)),
                                "digest only": sorted(set(expected) - set(got))}
    assert not mismatches, f"{builder.label}: {mismatches}"
    PROVEN.add(kind)


def test_issue_case_on_this_engine_is_consistent(tmp_path: Path) -> None:
    """The issue's case: whatever the sender, editing a file it does not send cannot change the image."""
    ctx = tmp_path / "ctx"
    for rel in ("go.mod", "main.go", "internal/api/handler.go"):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    (ctx / ".dockerignore").write_text("*\n!go.mod\n!**/*.go\n")
    builder = buildkit.detect("auto")
    files = context_files(ctx, tmp_path / "Dockerfile", rules_for(builder.kind))
    assert ("internal/api/handler.go" in files) == (builder.kind == "buildx")


def test_the_builder_the_pipeline_picks_was_proven(root: Path) -> None:
    """The builder `[build].builder` selects on this machine (pipeline.toml; auto picks the best present) is
    among the kinds whose case passed above in this session. Runs after them (file order)."""
    from pipeline.core.config import load_config

    configured = load_config(root / "pipeline.toml", check_files=False).build.builder
    picked = buildkit.detect(configured).kind
    print(f"builders here: {BUILDERS_HERE}; proven in this session: {sorted(PROVEN)}; "
          f"[build].builder = {configured!r} picks {picked}")
    assert picked in BUILDERS_HERE, f"{picked} is not among the builders probed here ({BUILDERS_HERE})"
    assert picked in PROVEN, (f"the builder the pipeline uses here ({picked}) was not proven in this session "
                              f"(proven: {sorted(PROVEN) or 'none'}); run the whole file")
