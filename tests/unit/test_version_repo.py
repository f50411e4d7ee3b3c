"""read_version on real temporary git repositories: one case per acceptance item of issue #3."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from pipeline.core.errors import GitStateError
from pipeline.versioning.tagging import sha_tag
from pipeline.versioning.version import read_version
from tests.unit.version_fixtures import Sandbox, versioning


def test_no_tags_gives_first_version(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: start")
    head = sandbox.commit("fix: second")
    v = read_version(sandbox.path, versioning(first_version="0.3.0"))
    assert v.sha == head and v.short_sha == head[:8]
    assert v.branch == "main" and not v.detached and not v.dirty and not v.shallow
    assert v.last is None and not v.on_tag and v.commits_since == 2
    assert str(v.next.version) == "0.3.0" and v.next.part == "first"
    assert v.semver == f"0.3.0-dev.2.sha-{head[:8]}"
    assert v.warnings == ()


def test_one_tag_then_commits(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: start")
    sandbox.tag("v1.2.0")
    sandbox.commit("docs: readme")
    sandbox.commit("fix: crash")
    v = read_version(sandbox.path, versioning())
    assert v.last is not None and v.last.tag == "v1.2.0" and v.last_final == v.last
    assert not v.on_tag and v.commits_since == 2 and v.head_tags == ()
    assert str(v.next.version) == "1.2.1" and v.next.part == "patch"
    assert v.next.reason == "patch: 1 fix, 1 docs since v1.2.0"
    assert v.semver.startswith("1.2.1-dev.2.sha-")


def test_tag_on_head(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: start")
    sandbox.tag("v2.0.0")
    v = read_version(sandbox.path, versioning())
    assert v.on_tag and v.is_release and v.head_tags == ("v2.0.0",) and v.commits_since == 0
    assert v.next.version is None and v.next.reason == "HEAD is the release v2.0.0"
    assert v.semver == "2.0.0"


def test_lightweight_tags_count_too(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: start")
    sandbox.tag("v0.2.0", annotated=False)
    sandbox.commit("feat: more")
    v = read_version(sandbox.path, versioning())
    assert v.last is not None and v.last.tag == "v0.2.0" and str(v.next.version) == "0.3.0"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("feat: new endpoint", "1.5.0"),
        ("fix: null deref", "1.4.3"),
        ("perf: cache", "1.4.3"),
        ("feat(api)!: drop v1", "2.0.0"),
        ("fix: rename\n\nBREAKING CHANGE: key renamed", "2.0.0"),
        ("docs: typo", None),
        ("chore: deps", None),
        ("refactor: split", None),
        ("Fixed some stuff", None),
    ],
)
def test_each_conventional_type_after_a_tag(tmp_path: Path, message: str, expected: str | None) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v1.4.2")
    sandbox.commit(message)
    v = read_version(sandbox.path, versioning())
    assert (str(v.next.version) if v.next.version else None) == expected


@pytest.mark.parametrize(("policy", "expected"), [("minor", "0.8.0"), ("major", "1.0.0")])
def test_breaking_before_1_0_0(tmp_path: Path, policy: str, expected: str) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v0.7.3")
    sandbox.commit("feat!: new wire format")
    v = read_version(sandbox.path, versioning(breaking_below_1=policy))
    assert str(v.next.version) == expected


def test_breaking_after_1_0_0_is_major_whatever_the_policy(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v1.0.0")
    sandbox.commit("fix: x\n\nBREAKING CHANGE: y")
    assert str(read_version(sandbox.path, versioning(breaking_below_1="minor")).next.version) == "2.0.0"


def test_non_conventional_patch_when_configured(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v1.0.0")
    sandbox.commit("Tweak the thing")
    assert read_version(sandbox.path, versioning()).next.version is None
    assert str(read_version(sandbox.path, versioning(non_conventional="patch")).next.version) == "1.0.1"


def test_prerelease_tags_are_the_last_tag_but_bumps_start_from_the_final(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v1.3.0")
    sandbox.commit("feat: big")
    sandbox.tag("v1.4.0-rc.1")
    sandbox.commit("fix: small")
    v = read_version(sandbox.path, versioning())
    assert v.last is not None and v.last.tag == "v1.4.0-rc.1" and v.commits_since == 1
    assert v.last_final is not None and v.last_final.tag == "v1.3.0"
    assert str(v.next.version) == "1.4.0" and len(v.commits) == 2
    assert v.to_dict()["last_release"] == "1.3.0"


def test_non_semver_and_unreachable_tags_are_ignored(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v1.0.0")
    side = sandbox.repo.create_head("side")
    sandbox.commit("feat: x")
    for bad in ("release-2024", "v1.2", "1.2.3.4", "v9.9.9.9", "v2.0.0+bad+meta", "2.0.0"):
        sandbox.tag(bad)
    main_head = sandbox.repo.head.commit.hexsha
    side.checkout()
    sandbox.commit("feat: elsewhere")
    sandbox.tag("v5.0.0")  # a higher release on another branch: not reachable from main
    sandbox.repo.heads["main"].checkout()
    v = read_version(sandbox.path, versioning())
    assert v.sha == main_head
    assert v.last is not None and v.last.tag == "v1.0.0"
    assert str(v.next.version) == "1.1.0"
    assert v.ignored_tags == ("1.2.3.4", "2.0.0", "release-2024", "v1.2", "v2.0.0+bad+meta", "v9.9.9.9")
    assert len(v.warnings) == 1
    assert v.warnings[0].startswith("ignored 6 tag(s) that are not release tags (vMAJOR.MINOR.PATCH[-PRE][+BUILD]): ")


def test_two_different_dirty_diffs_give_different_tags(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base", {"app.txt": "one\n", ".gitignore": "*.log\n"})
    clean = read_version(sandbox.path, versioning())
    assert not clean.dirty and clean.dirty_hash is None and sha_tag(clean) == f"sha-{clean.short_sha}"

    sandbox.write("app.txt", "two\n")
    a = read_version(sandbox.path, versioning())
    sandbox.write("app.txt", "three\n")
    b = read_version(sandbox.path, versioning())
    sandbox.write("app.txt", "two\n")
    a_again = read_version(sandbox.path, versioning())
    assert a.dirty and b.dirty and a.dirty_paths == ("app.txt",)
    assert sha_tag(a) != sha_tag(b)
    assert sha_tag(a) == sha_tag(a_again) == f"sha-{a.short_sha}-dirty-{a.dirty_hash}"
    assert a.semver.endswith(f".dirty-{a.dirty_hash}")

    sandbox.write("notes/new.txt", "untracked\n")  # untracked files are part of the dirty state
    c = read_version(sandbox.path, versioning())
    sandbox.write("notes/new.txt", "untracked, edited\n")
    d = read_version(sandbox.path, versioning())
    assert len({a.dirty_hash, c.dirty_hash, d.dirty_hash}) == 3
    assert c.dirty_paths == ("app.txt", "notes/new.txt")

    sandbox.write("debug.log", "ignored\n")  # ignored files are not
    assert read_version(sandbox.path, versioning()).dirty_hash == d.dirty_hash


def test_staged_change_is_dirty(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base", {"app.txt": "one\n"})
    sandbox.write("app.txt", "staged\n")
    sandbox.repo.index.add(["app.txt"])
    v = read_version(sandbox.path, versioning())
    assert v.dirty and v.dirty_paths == ("app.txt",)


def test_detached_head(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    first = sandbox.commit("feat: base")
    sandbox.tag("v0.1.0")
    sandbox.commit("fix: x")
    sandbox.repo.git.checkout(first)
    v = read_version(sandbox.path, versioning())
    assert v.detached and v.branch is None and v.sha == first and v.on_tag
    named = read_version(sandbox.path, versioning(), branch_override="release/0.1")
    assert named.detached and named.branch == "release/0.1"


def test_shallow_clone(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: one")
    sandbox.tag("v0.4.0")
    sandbox.commit("fix: two")
    sandbox.commit("feat: three")
    sandbox.commit("fix: four")
    url = f"file://{sandbox.path}"

    deep = git.Repo.clone_from(url, tmp_path / "deep", depth=4)  # the tagged commit is inside the depth
    v = read_version(deep.working_dir, versioning())
    assert v.shallow and v.last is not None and v.last.tag == "v0.4.0"
    assert v.commits_since == 3 and str(v.next.version) == "0.5.0" and v.warnings == ()

    shallow = git.Repo.clone_from(url, tmp_path / "shallow", depth=2)  # the tag is older than the depth
    s = read_version(shallow.working_dir, versioning())
    assert s.shallow and s.last is None and s.commits_since == 2
    assert s.sha == v.sha and s.short_sha == v.short_sha  # same tags in a shallow and a deep clone
    assert any("git fetch --unshallow --tags" in w for w in s.warnings)


def test_nested_directory_finds_the_repository(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base", {"sub/dir/file.txt": "x\n"})
    assert read_version(sandbox.path / "sub" / "dir", versioning()).branch == "main"


def test_not_a_repository_and_empty_repository(tmp_path: Path) -> None:
    with pytest.raises(GitStateError, match="not a git repository"):
        read_version(tmp_path)
    git.Repo.init(tmp_path / "empty")
    with pytest.raises(GitStateError, match="has no commits yet") as exc:
        read_version(tmp_path / "empty")
    assert exc.value.exit_code == 2


def test_to_dict_is_the_documented_schema(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "repo")
    sandbox.commit("feat: base")
    sandbox.tag("v1.0.0")
    sandbox.commit("feat: x")
    d = read_version(sandbox.path, versioning()).to_dict()
    assert list(d) == [
        "schema", "sha", "short_sha", "branch", "detached", "dirty", "dirty_hash", "dirty_files", "shallow",
        "tag_prefix", "last_tag", "last_version", "last_release", "on_tag", "head_tags", "commits_since",
        "release", "version", "next_version", "bump", "bump_reason", "ignored_tags", "warnings", "next_known",
    ]
    assert d["schema"] == 1 and d["last_tag"] == "v1.0.0" and d["next_version"] == "1.1.0" and d["bump"] == "minor"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "versioning.md").read_text()
    for key in d:
        assert f"`{key}`" in docs, f"docs/versioning.md does not document {key}"
