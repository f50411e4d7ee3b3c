"""Versioning inputs real projects have (issue 16's held-back kinds), on real git repositories.

Each case is built with the git CLI in a temporary directory (messages passed byte for byte, so CRLF and
Latin-1 reach git as a user's editor would write them) and read with the real read_version/changelog code.
Right values: Conventional Commits 1.0.0 and semver 2.0.0 (§11 precedence).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.versioning.changelog import build_changelog, render_markdown
from pipeline.versioning.version import read_version


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.n = 0
        self.git("init", "-q", "-b", "main")
        for k, v in (("user.name", "T"), ("user.email", "t@example.invalid"), ("commit.gpgSign", "false"),
                     ("tag.gpgSign", "false")):
            self.git("config", k, v)

    def git(self, *args: str, data: bytes | None = None) -> str:
        cp = subprocess.run(["git", "-C", str(self.path), *args], input=data, capture_output=True,
                            timeout=30, check=True)
        return cp.stdout.decode().strip()

    def commit(self, message: str | bytes, *opts: str) -> str:
        self.n += 1
        (self.path / "f.txt").write_text(f"{self.n}\n")
        self.git("add", "-A")
        self.git(*opts, "commit", "-q", "-F", "-",
                 data=message if isinstance(message, bytes) else message.encode())
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, annotated: bool = False) -> None:
        self.git("tag", *(("-a", "-m", name) if annotated else ()), name)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo(tmp_path / "repo")
    r.commit("chore: init")
    return r


def _next(r: Repo) -> tuple[str | None, str | None]:
    d = read_version(r.path).to_dict()
    return d["next_version"], d["bump"]


def test_prerelease_newer_than_last_release_is_a_floor(repo: Repo) -> None:
    """After v1.2.0 a v2.0.0-rc.1 (made with --part major) is in the history: fixes alone must not give 1.2.1,
    which sorts below 2.0.0-rc.1 (semver §11); the next release is 2.0.0."""
    repo.tag("v1.2.0")
    repo.commit("fix: a")
    repo.tag("v2.0.0-rc.1", annotated=True)
    repo.commit("fix: b")
    v = read_version(repo.path)
    assert str(v.next.version) == "2.0.0"
    assert v.semver is not None and v.semver.startswith("2.0.0-dev.1.sha-")
    assert "v2.0.0-rc.1" in v.next.reason


def test_prerelease_of_the_same_target_is_unchanged(repo: Repo) -> None:
    repo.tag("v1.2.0")
    repo.commit("feat: y")
    repo.tag("v1.3.0-rc.1")
    repo.commit("fix: z")
    assert _next(repo) == ("1.3.0", "minor")


def test_prerelease_precedence_numeric_identifiers(repo: Repo) -> None:
    """alpha.10 > alpha.2 (numeric identifiers compare as numbers); the last tag is the highest."""
    repo.tag("v1.0.0-alpha.2")
    repo.commit("fix: y")
    repo.tag("v1.0.0-alpha.10")
    repo.commit("fix: z")
    d = read_version(repo.path).to_dict()
    assert d["last_tag"] == "v1.0.0-alpha.10" and d["next_version"] == "1.0.0"


@pytest.mark.parametrize(("message", "expected"), [
    ("feat!: drop v1", ("2.0.0", "major")),
    ("feat(api)!: drop v1", ("2.0.0", "major")),
    ("fix: a\n\nBREAKING CHANGE: gone", ("2.0.0", "major")),
    ("fix: a\n\nBREAKING-CHANGE: gone", ("2.0.0", "major")),
    ("fix: a\n\nThis is not a BREAKING CHANGE: just words", ("1.0.1", "patch")),
    ("fix: a\n\nbreaking change: lowercase is not the token", ("1.0.1", "patch")),
    ("FEAT: shouting", ("1.1.0", "minor")),
    ("feat : space before the colon", (None, None)),
    ("feat: ", (None, None)),
    ("fixup! feat: x", (None, None)),
    ("squash! feat!: x", (None, None)),
    ("Merge branch 'topic' into main", (None, None)),
    ("fix: a\r\n\r\nBREAKING CHANGE: crlf\r\n", ("2.0.0", "major")),
    ("feat: " + "x" * 5000, ("1.1.0", "minor")),
])
def test_commit_message_shapes(repo: Repo, message: str, expected: tuple[str | None, str | None]) -> None:
    repo.tag("v1.0.0")
    repo.commit(message)
    assert _next(repo) == expected


def test_latin1_messages_declared_or_not(repo: Repo) -> None:
    repo.tag("v1.0.0")
    repo.commit("feat: café".encode("latin-1"), "-c", "i18n.commitEncoding=latin1")
    repo.commit("fix: déjà\n\nBREAKING CHANGE: naïve".encode("latin-1"))
    v = read_version(repo.path)
    assert (str(v.next.version), v.next.part) == ("2.0.0", "major")
    text = render_markdown(build_changelog(v.commits, title="t", since="v1.0.0"))
    text.encode("utf-8")  # printable as UTF-8: no lone surrogates
    assert "café" in text


def test_revert_of_revert_of_revert(repo: Repo) -> None:
    repo.tag("v1.0.0")
    repo.commit("feat!: drop")
    for _ in range(3):
        repo.git("revert", "--no-edit", "HEAD")
    assert _next(repo) == (None, None)
    repo.git("revert", "--no-edit", "HEAD")  # four reverts: the breaking change stands again
    assert _next(repo) == ("2.0.0", "major")


def test_tags_off_branch_and_other_prefixes_are_not_releases(repo: Repo) -> None:
    repo.tag("v1.0.0")
    repo.tag("chart-3.0.0")
    repo.git("checkout", "-q", "-b", "other")
    repo.commit("fix: x")
    repo.tag("v9.0.0")
    repo.git("checkout", "-q", "main")
    repo.commit("fix: y")
    d = read_version(repo.path).to_dict()
    assert (d["last_tag"], d["next_version"]) == ("v1.0.0", "1.0.1")
    assert d["ignored_tags"] == ["chart-3.0.0"]


def test_build_metadata_and_two_tags_on_one_commit(repo: Repo) -> None:
    repo.tag("v1.2.3+build.5")
    repo.tag("v1.2.4", annotated=True)
    repo.commit("fix: b")
    assert _next(repo) == ("1.2.5", "patch")


def test_breaking_below_1_bumps_minor(repo: Repo) -> None:
    repo.tag("v0.3.0")
    repo.commit("fix: y\n\nBREAKING CHANGE: z")
    assert _next(repo) == ("0.4.0", "minor")


# ------------------------------------------------------------------ release tags outside the tag format

@pytest.mark.parametrize(("tag", "fix"), [
    ("1.2.3", 'set [versioning] tag_prefix = "" in pipeline.toml, or tag that release v1.2.3'),
    ("v1.2", "tag that release v1.2.0 (git tag v1.2.0 v1.2^{})"),
    ("V1.4.0", "tag that release v1.4.0 (git tag v1.4.0 V1.4.0^{})"),
])
def test_release_tag_outside_the_format_makes_the_next_version_unknown(repo: Repo, tag: str, fix: str) -> None:
    """A project that released as `1.2.3` (commitizen's default format) or `v1.2`: counting from first_version
    would make 0.1.0 below the published release. The version is unknown, with the fix; no semver tag."""
    repo.tag(tag, annotated=True)
    repo.commit("fix: b")
    from pipeline.versioning.cli import bump_version, version_report
    from tests.unit.version_fixtures import project_config

    cfg = project_config()
    data = version_report("staging", repo_path=repo.path, config=cfg)
    assert (data["next_version"], data["next_known"], data["version"]) == (None, False, None)
    assert f"tag '{tag}' looks like a release" in data["bump_reason"]
    assert data["tags"] == [f"sha-{data['short_sha']}"]
    assert any(fix in w for w in data["warnings"])
    with pytest.raises(Exception) as exc:
        bump_version(repo_path=repo.path, config=cfg)
    assert getattr(exc.value, "exit_code", None) == 2 and exc.value.one_line().endswith(f"(fix: {fix})")


def test_release_tag_outside_the_format_refuses_staging(repo: Repo) -> None:
    from pipeline.core.errors import GitStateError
    from pipeline.versioning.releaseinfo import release_info
    from tests.unit.version_fixtures import project_config

    repo.tag("1.2.3")
    repo.commit("fix: b")
    base = project_config()
    cfg = type(base)(**{**base.__dict__, "root": repo.path})
    with pytest.raises(GitStateError) as exc:
        release_info(cfg, cfg.env("staging"))
    assert 'set [versioning] tag_prefix = ""' in exc.value.one_line()
    assert release_info(cfg, cfg.env("dev")).tags[0].startswith("sha-")


def test_near_miss_below_the_last_release_is_only_ignored(repo: Repo) -> None:
    """With release tags read, a near miss stays only ignored (documented: other tags are never picked)."""
    repo.tag("1.0.0")
    repo.commit("feat: a")
    repo.tag("v2.0.0")
    repo.commit("fix: b")
    d = read_version(repo.path).to_dict()
    assert (d["next_version"], d["next_known"], d["ignored_tags"]) == ("2.0.1", True, ["1.0.0"])


def test_near_miss_not_reachable_is_only_ignored(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("fix: side")
    repo.tag("1.5.0")
    repo.git("checkout", "-q", "main")
    repo.commit("feat: a")
    d = read_version(repo.path).to_dict()
    assert (d["next_version"], d["bump"]) == ("0.1.0", "first")
