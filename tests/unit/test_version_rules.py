"""Pure versioning rules: conventional-commit parsing, release-tag parsing, next-version computation."""

from __future__ import annotations

import pytest
import semver

from pipeline.core.errors import UsageError
from pipeline.tools.git import RawCommit
from pipeline.versioning.version import ConventionalCommit, ReleaseTag, compute_next, parse_commit, parse_release_tag
from tests.unit.version_fixtures import versioning


def cc(message: str, parents: int = 1) -> ConventionalCommit:
    return parse_commit(RawCommit("a" * 40, tuple("p" * 40 for _ in range(parents)), message))


def rel(tag: str) -> ReleaseTag:
    v = parse_release_tag(tag, "v")
    assert v is not None
    return ReleaseTag(tag, v, "b" * 40)


@pytest.mark.parametrize(
    ("message", "type_", "scope", "desc", "breaking"),
    [
        ("feat: add login", "feat", None, "add login", False),
        ("fix(api): handle nil", "fix", "api", "handle nil", False),
        ("Feat(ui)!: drop IE", "feat", "ui", "drop IE", True),
        ("perf: faster", "perf", None, "faster", False),
        ("chore: deps", "chore", None, "deps", False),
        ("refactor!: rename", "refactor", None, "rename", True),
        ("fix: x\n\nbody\n\nBREAKING CHANGE: config key renamed", "fix", None, "x", True),
        ("fix: x\n\nBREAKING-CHANGE: also accepted", "fix", None, "x", True),
        ("fix: x\n\nbreaking change: lowercase is not a footer", "fix", None, "x", False),
        ("Update readme", None, None, "Update readme", False),
        ("feat:missing space", None, None, "feat:missing space", False),
        ("feat (x): space before scope", None, None, "feat (x): space before scope", False),
    ],
)
def test_parse_commit(message: str, type_: str | None, scope: str | None, desc: str, breaking: bool) -> None:
    c = cc(message)
    assert (c.type, c.scope, c.description, c.breaking) == (type_, scope, desc, breaking)


def test_breaking_footer_note_and_merge_flag() -> None:
    c = cc("feat: x\n\nBREAKING CHANGE: the /v1 API is gone")
    assert c.breaking_note == "the /v1 API is gone"
    assert cc("Merge branch 'x'", parents=2).merge


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("v1.2.3", "1.2.3"), ("v0.1.0-rc.1", "0.1.0-rc.1"), ("v10.20.30", "10.20.30"),
     ("release-2024", None), ("v1.2", None), ("1.2.3.4", None), ("v1.2.3.4", None), ("1.2.3", None),
     ("v01.2.3", None), ("v1.2.3+build.5", "1.2.3+build.5"), ("v1.2.3+", None), ("vv1.2.3", None), ("v1.2.3-", None)],
)
def test_parse_release_tag(tag: str, expected: str | None) -> None:
    v = parse_release_tag(tag, "v")
    assert (str(v) if v else None) == expected


def test_parse_release_tag_other_prefix() -> None:
    assert str(parse_release_tag("release/1.2.3", "release/")) == "1.2.3"
    assert parse_release_tag("v1.2.3", "release/") is None


@pytest.mark.parametrize(
    ("messages", "last", "expected", "part"),
    [
        (["feat: a"], "v1.2.3", "1.3.0", "minor"),
        (["fix: a"], "v1.2.3", "1.2.4", "patch"),
        (["perf: a"], "v1.2.3", "1.2.4", "patch"),
        (["fix: a", "feat: b", "docs: c"], "v1.2.3", "1.3.0", "minor"),
        (["feat!: a"], "v1.2.3", "2.0.0", "major"),
        (["fix: a\n\nBREAKING CHANGE: b"], "v1.2.3", "2.0.0", "major"),
        (["feat!: a"], "v0.4.2", "0.5.0", "minor"),  # below 1.0.0: breaking bumps minor
        (["fix: a"], "v0.4.2", "0.4.3", "patch"),
    ],
)
def test_next_from_conventional_commits(messages: list[str], last: str, expected: str, part: str) -> None:
    r = rel(last)
    nv = compute_next(last_final=r, last=r, commits=[cc(m) for m in messages], versioning=versioning())
    assert (str(nv.version), nv.part) == (expected, part)


def test_breaking_below_1_major_when_configured() -> None:
    r = rel("v0.4.2")
    nv = compute_next(last_final=r, last=r, commits=[cc("feat!: a")], versioning=versioning(breaking_below_1="major"))
    assert str(nv.version) == "1.0.0"


def test_non_conventional_commits_bump_nothing_and_say_so() -> None:
    r = rel("v1.0.0")
    commits = [cc("Update readme"), cc("chore: deps"), cc("Merge branch 'x'", parents=2)]
    nv = compute_next(last_final=r, last=r, commits=commits, versioning=versioning())
    assert nv.version is None
    assert "1 chore, 1 non-conventional" in nv.reason
    assert 'non_conventional = "none"' in nv.reason
    patch = compute_next(last_final=r, last=r, commits=commits, versioning=versioning(non_conventional="patch"))
    assert str(patch.version) == "1.0.1"


def test_merge_commits_do_not_bump_even_with_non_conventional_patch() -> None:
    r = rel("v1.0.0")
    nv = compute_next(last_final=r, last=r, commits=[cc("Merge branch 'x'", parents=2)],
                      versioning=versioning(non_conventional="patch"))
    assert nv.version is None


def test_first_version_without_tags() -> None:
    nv = compute_next(last_final=None, last=None, commits=[cc("feat!: x")], versioning=versioning())
    assert (str(nv.version), nv.part) == ("0.1.0", "first")
    nv = compute_next(last_final=None, last=None, commits=[], versioning=versioning(first_version="1.0.0"))
    assert str(nv.version) == "1.0.0"


def test_prerelease_sequence() -> None:
    final = rel("v1.3.0")
    commits = [cc("feat: a")]
    rc1 = compute_next(last_final=final, last=final, commits=commits, versioning=versioning(), pre="rc")
    assert str(rc1.version) == "1.4.0-rc.1"
    rc2 = compute_next(last_final=final, last=rel("v1.4.0-rc.1"), commits=commits, versioning=versioning(), pre="rc")
    assert str(rc2.version) == "1.4.0-rc.2"
    done = compute_next(last_final=final, last=rel("v1.4.0-rc.2"), commits=commits, versioning=versioning())
    assert str(done.version) == "1.4.0"
    # a different label restarts at 1; a feat after an rc of a patch release moves the target
    beta = compute_next(last_final=final, last=rel("v1.4.0-rc.2"), commits=commits, versioning=versioning(),
                        pre="beta")
    assert str(beta.version) == "1.4.0-beta.1"
    moved = compute_next(last_final=final, last=rel("v1.3.1-rc.1"), commits=commits, versioning=versioning(),
                         pre="rc")
    assert str(moved.version) == "1.4.0-rc.1"


def test_prerelease_before_first_release() -> None:
    rc1 = rel("v0.1.0-rc.1")
    nv = compute_next(last_final=None, last=rc1, commits=[], versioning=versioning(), pre="rc")
    assert str(nv.version) == "0.1.0-rc.2"
    assert str(compute_next(last_final=None, last=rc1, commits=[], versioning=versioning()).version) == "0.1.0"


def test_explicit_part_overrides_commits() -> None:
    r = rel("v1.2.3")
    assert str(compute_next(last_final=r, last=r, commits=[], versioning=versioning(), part="major").version) \
        == "2.0.0"
    assert str(compute_next(last_final=r, last=r, commits=[cc("feat!: x")], versioning=versioning(),
                            part="patch").version) == "1.2.4"


@pytest.mark.parametrize(("part", "pre"), [("huge", None), ("auto", "rc.1"), ("auto", "1rc"), ("auto", "r c")])
def test_bad_part_or_label_is_a_usage_error(part: str, pre: str | None) -> None:
    r = rel("v1.0.0")
    with pytest.raises(UsageError) as exc:
        compute_next(last_final=r, last=r, commits=[], versioning=versioning(), part=part, pre=pre)
    assert exc.value.exit_code == 2


def test_version_ordering_used_for_not_greater_check() -> None:
    assert semver.Version.parse("1.4.0-beta.1") < semver.Version.parse("1.4.0-rc.2") < semver.Version.parse("1.4.0")
