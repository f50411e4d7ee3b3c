"""`.dockerignore` semantics of the three context senders (pure: files in tmp dirs, no engine).

The same table is checked against the engine itself in tests/integration/test_build_context_engine.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.stages.buildcontext import (
    BUILDKIT_CLASSIC,
    BUILDKIT_CURRENT,
    LEGACY_TAR,
    compile_pattern,
    context_files,
    read_ignore_file,
)

TREE = ["go.mod", "main.go", "README.md", "internal/api/handler.go", "internal/api/notes.txt",
        "kit/kit.go", "kit/tmp/x.go", "a/b/tmp/deep.txt", "build/out.bin", "docs/build/page.html",
        "scratch.tmp", "sub/scratch.tmp"]


def make_tree(root: Path, ignore: str | None, files: list[str] = TREE) -> Path:
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel + "\n")
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore)
    return root


def test_read_ignore_file_cleans_like_the_cli() -> None:
    text = "# comment\n\n  *.tmp  \n/build/\n!  kit/ \n./docs//build\n!\n"
    assert read_ignore_file(text) == ["*.tmp", "build", "!kit", "docs/build", "!"]


def test_pattern_translation() -> None:
    assert compile_pattern("*.go").matches("main.go")
    assert not compile_pattern("*.go").matches("kit/kit.go")
    assert compile_pattern("**/*.go").matches("main.go")
    assert compile_pattern("**/*.go").matches("internal/api/handler.go")
    assert compile_pattern("kit/**").matches("kit/tmp/x.go")
    assert compile_pattern("?.md").matches("a.md") and not compile_pattern("?.md").matches("ab.md")
    assert compile_pattern("a.b").matches("a.b") and not compile_pattern("a.b").matches("axb")
    assert compile_pattern("[ab].txt").matches("a.txt")
    assert compile_pattern("\\*.txt").matches("*.txt") and not compile_pattern("\\*.txt").matches("x.txt")
    with pytest.raises(UsageError):
        compile_pattern("!")


def test_issue_case_depends_on_the_sender(tmp_path: Path) -> None:
    """`*`, `!go.mod`, `!**/*.go`: newer BuildKit (buildx) enters internal/; the 20.10 CLI and the tar do not."""
    ctx = make_tree(tmp_path, "*\n!go.mod\n!**/*.go\n")
    df = tmp_path / "Dockerfile.outside"
    current = context_files(ctx, df, BUILDKIT_CURRENT)
    assert current == ["go.mod", "internal/api/handler.go", "kit/kit.go", "kit/tmp/x.go", "main.go"]
    assert context_files(ctx, df, BUILDKIT_CLASSIC) == ["go.mod", "main.go"]
    assert context_files(ctx, df, LEGACY_TAR) == ["go.mod", "main.go"]


@pytest.mark.parametrize("ignore,expected", [
    (None, sorted(TREE)),
    ("*\n!go.mod\n!*.go\n!kit/\n", ["go.mod", "kit/kit.go", "kit/tmp/x.go", "main.go"]),
    ("/build\n", sorted(t for t in [*TREE, ".dockerignore"] if t != "build/out.bin")),
    ("**/build\n", sorted(t for t in [*TREE, ".dockerignore"] if "build/" not in t)),
    ("*.tmp\n", sorted(t for t in [*TREE, ".dockerignore"] if t != "scratch.tmp")),
    ("**/*.tmp\n.dockerignore\n", sorted(t for t in TREE if not t.endswith(".tmp"))),
    ("internal\n!internal/api/handler.go\n",
     sorted(t for t in [*TREE, ".dockerignore"] if t != "internal/api/notes.txt")),
    ("kit/**\n!kit/tmp\n", sorted(t for t in [*TREE, ".dockerignore"] if t != "kit/kit.go")),
])
def test_table_agrees_across_senders(tmp_path: Path, ignore: str | None, expected: list[str]) -> None:
    """Ordinary ignore files: all three senders send the same files."""
    ctx = make_tree(tmp_path, ignore)
    df = tmp_path / "elsewhere" / "Dockerfile"
    for rules in (BUILDKIT_CLASSIC, BUILDKIT_CURRENT, LEGACY_TAR):
        assert context_files(ctx, df, rules) == expected, rules.name


def test_parent_matching_differs_for_double_star(tmp_path: Path) -> None:
    """`**/tmp` with an exception inside: the 2020 matcher tests parents only at the pattern's depth."""
    ctx = make_tree(tmp_path, "**/tmp\n!a/b/tmp/keep.txt\n", [*TREE, "a/b/tmp/keep.txt"])
    df = tmp_path / "x" / "Dockerfile"
    classic = context_files(ctx, df, BUILDKIT_CLASSIC)
    assert "a/b/tmp/deep.txt" in classic and "a/b/tmp/keep.txt" in classic
    current = context_files(ctx, df, BUILDKIT_CURRENT)
    assert "a/b/tmp/deep.txt" not in current and "a/b/tmp/keep.txt" in current


def test_dockerfile_specific_ignore_file_takes_precedence(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path / "ctx", "README.md\n")
    df = tmp_path / "dockerfiles" / "svc.Dockerfile"
    df.parent.mkdir()
    df.write_text("FROM scratch\n")
    (df.parent / "svc.Dockerfile.dockerignore").write_text("*.tmp\n**/*.tmp\n")
    for rules in (BUILDKIT_CLASSIC, BUILDKIT_CURRENT):
        files = context_files(ctx, df, rules)
        assert "README.md" in files and "scratch.tmp" not in files and "sub/scratch.tmp" not in files
    legacy = context_files(ctx, df, LEGACY_TAR)   # the legacy builder reads only the context's file
    assert "README.md" not in legacy and "scratch.tmp" in legacy


def test_symlinks_are_sent_as_links(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, None, ["real/file.txt"])
    (ctx / "link").symlink_to("real")
    assert context_files(ctx, tmp_path / "Dockerfile", BUILDKIT_CLASSIC) == ["link", "real/file.txt"]


def test_project_services_digest_is_the_same_whichever_builder_runs() -> None:
    """The services' ignore files avoid the senders' corners: switching builders rebuilds nothing."""
    from pipeline.core.config import load_config
    from pipeline.stages.buildcontext import rules_for
    from pipeline.stages.plan import input_record

    cfg = load_config()
    for svc in cfg.services:
        digests = {k: input_record(svc, {"A": "1"}, {"base": "sha256:1"}, rules_for(k)).digest
                   for k in ("buildx", "buildkit", "legacy")}
        assert len(set(digests.values())) == 1, (svc.name, digests)
        files = context_files(svc.context, svc.dockerfile, rules_for("buildkit"))
        assert ".dockerignore" not in files and files, svc.name
