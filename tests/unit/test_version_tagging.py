"""Tag policy (pure) and release guards, over Versions read from real temporary repositories."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.core.errors import GitStateError
from pipeline.versioning.guards import require_release_ready
from pipeline.versioning.tagging import branch_tag, plan_tags, tags_for
from pipeline.versioning.version import Version, read_version
from tests.unit.version_fixtures import Sandbox, env, project_config, versioning

DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # the Docker reference grammar for a tag


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("feature/Foo_Bar#12", "feature-foo_bar-12"),
        ("main", "main"),
        ("Release/2.x", "release-2.x"),
        ("-weird--name-", "weird-name"),
        (".hidden", "hidden"),
        ("fix/ümlaut & space", "fix-mlaut-space"),
        ("///", "branch"),
        ("latest", "branch-latest"),
        ("sha-1a2b3c4d", "branch-sha-1a2b3c4d"),
        ("1.2", "branch-1.2"),
    ],
)
def test_branch_tag_is_a_valid_docker_tag(branch: str, expected: str) -> None:
    tag = branch_tag(branch)
    assert tag == expected
    assert DOCKER_TAG.fullmatch(tag)


def test_long_branch_names_are_cut_and_stay_distinct() -> None:
    a, b = "feature/" + "x" * 122, "feature/" + "x" * 121 + "y"
    assert len(a) == len(b) == 130
    ta, tb = branch_tag(a), branch_tag(b)
    assert len(ta) == len(tb) == 128 and ta != tb
    assert DOCKER_TAG.fullmatch(ta) and DOCKER_TAG.fullmatch(tb)
    assert branch_tag("a" * 128) == "a" * 128  # exactly the limit: untouched


def _repo_version(tmp_path: Path, *, tag: str | None = None, after: int = 0, branch: str = "main",
                  dirty: bool = False) -> Version:
    sb = Sandbox(tmp_path / "repo", branch=branch)
    sb.commit("feat: base", {"app.txt": "1\n"})
    if tag:
        sb.tag(tag)
    for i in range(after):
        sb.commit(f"feat: more {i}")
    if dirty:
        sb.write("app.txt", "changed\n")
    return read_version(sb.path, versioning())


def test_branch_named_like_the_issue_gives_a_valid_tag_from_a_real_repo(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, branch="feature/Foo_Bar#12")
    assert v.branch == "feature/Foo_Bar#12"
    tags = tags_for(env("dev", ("sha", "branch")), v)
    assert tags == [f"sha-{v.short_sha}", "feature-foo_bar-12"]
    assert all(DOCKER_TAG.fullmatch(t) for t in tags)


def test_130_char_branch_from_a_real_repo(tmp_path: Path) -> None:
    name = "feature/" + "Long_Name-" * 12 + "ab"
    assert len(name) == 130
    v = _repo_version(tmp_path, branch=name)
    (tag,) = tags_for(env("dev", ("branch",)), v)
    assert len(tag) == 128 and DOCKER_TAG.fullmatch(tag)


def test_release_on_a_clean_tag_gets_all_semver_tags(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v1.4.2")
    prod = project_config().env("prod")
    assert tags_for(prod, v) == ["1.4.2", "1.4", "1"]
    assert tags_for(env("x", ("sha", "semver", "latest")), v) == [f"sha-{v.short_sha}", "1.4.2", "latest"]
    require_release_ready(v, prod)  # accepted: no exception


def test_untagged_head_gets_a_dev_prerelease_and_no_moving_tags(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v1.4.2", after=2)
    plan = plan_tags(project_config().env("prod"), v)
    assert plan.tags == (f"1.5.0-dev.2.sha-{v.short_sha}",)
    assert any("semver-minor tag skipped" in n for n in plan.notes)
    assert any("semver-major tag skipped" in n for n in plan.notes)
    staging = tags_for(project_config().env("staging"), v)
    assert staging == [f"sha-{v.short_sha}", f"1.5.0-dev.2.sha-{v.short_sha}"]
    assert all(DOCKER_TAG.fullmatch(t) for t in staging)


def test_prerelease_tag_gets_semver_but_no_moving_tags(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v2.0.0-rc.1")
    assert tags_for(project_config().env("prod"), v) == ["2.0.0-rc.1"]


def test_dirty_tree_on_a_tag_is_not_the_release(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v1.0.0", dirty=True)
    assert v.on_tag and not v.is_release
    tags = tags_for(env("staging", ("sha", "semver")), v)
    assert tags == [f"sha-{v.short_sha}-dirty-{v.dirty_hash}",
                    f"1.0.1-dev.0.sha-{v.short_sha}.dirty-{v.dirty_hash}"]
    assert all(DOCKER_TAG.fullmatch(t) for t in tags)


def test_no_tags_at_all_semver_uses_first_version(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, after=1)
    assert tags_for(env("staging", ("semver",)), v) == [f"0.1.0-dev.2.sha-{v.short_sha}"]


def test_detached_head_skips_the_branch_tag_with_a_note(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "repo")
    first = sb.commit("feat: a")
    sb.commit("feat: b")
    sb.repo.git.checkout(first)
    v = read_version(sb.path, versioning())
    plan = plan_tags(env("dev", ("sha", "branch")), v)
    assert plan.tags == (f"sha-{first[:8]}",)
    assert plan.notes == ("branch tag skipped: HEAD is detached (set VEZA_BRANCH to name the branch)",)
    with pytest.raises(GitStateError, match="gets no image tag") as exc:
        tags_for(env("dev", ("branch",)), v)
    assert exc.value.exit_code == 2
    named = read_version(sb.path, versioning(), branch_override="feature/CI-Build")
    assert tags_for(env("dev", ("branch",)), named) == ["feature-ci-build"]


def test_the_project_config_envs(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, branch="feature/Foo_Bar#12", tag="v0.3.0", after=1)
    cfg = project_config()
    for name in cfg.environments:
        tags = tags_for(cfg.env(name), v)
        assert tags and all(DOCKER_TAG.fullmatch(t) for t in tags), (name, tags)
        if name in ("staging", "prod"):
            assert "latest" not in tags


# ------------------------------------------------------------------ guards

def test_prod_refuses_a_dirty_tree(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v1.0.0", dirty=True)
    with pytest.raises(GitStateError) as exc:
        require_release_ready(v, project_config().env("prod"))
    assert exc.value.exit_code == 2
    assert exc.value.one_line() == ("prod requires a clean tree: 1 uncommitted change(s) (app.txt) "
                                    "(fix: commit or remove them, then rerun)")


def test_prod_refuses_a_head_without_release_tag(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v1.0.0", after=3)
    with pytest.raises(GitStateError) as exc:
        require_release_ready(v, project_config().env("prod"))
    assert exc.value.message == ("prod requires a semver release tag on HEAD: "
                                 f"HEAD {v.short_sha} is 3 commit(s) after v1.0.0")
    assert "invoke bump" in (exc.value.hint or "")


def test_prod_refuses_when_no_tag_exists(tmp_path: Path) -> None:
    v = _repo_version(tmp_path)
    with pytest.raises(GitStateError, match="has no release tag and none is reachable from it"):
        require_release_ready(v, project_config().env("prod"))


def test_prod_refuses_a_prerelease_unless_allowed(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, tag="v1.1.0-rc.1")
    prod = project_config().env("prod")
    with pytest.raises(GitStateError, match=r"prod requires a final release tag on HEAD: v1.1.0-rc.1 is a pre-release"):
        require_release_ready(v, prod)
    require_release_ready(v, prod, allow_prerelease=True)


def test_dev_accepts_anything(tmp_path: Path) -> None:
    v = _repo_version(tmp_path, after=1, dirty=True)
    require_release_ready(v, project_config().env("dev"))
    require_release_ready(v, project_config().env("staging"))


def test_read_project_version_takes_the_branch_of_a_detached_ci_checkout_from_veza_branch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.versioning.version import read_project_version

    sb = Sandbox(tmp_path / "repo")
    first = sb.commit("feat: a")
    sb.commit("feat: b")
    sb.repo.git.checkout(first)
    monkeypatch.setenv("VEZA_BRANCH", "feature/Foo_Bar#12")
    v = read_project_version(project_config(), sb.path)
    assert v.detached and tags_for(project_config().env("dev"), v) == [f"sha-{first[:8]}", "feature-foo_bar-12"]
    monkeypatch.delenv("VEZA_BRANCH")
    assert read_project_version(project_config(), sb.path).branch is None


@pytest.mark.parametrize(("tag", "after", "dirty"), [
    ("v1.4.2", 0, False),        # a final release: semver, X.Y and X
    ("v1.5.0-rc.1", 0, False),   # an rc: its own tag, no moving tags
    ("v1.4.2", 3, False),        # a dev pre-release after a release: no moving tags
    ("v1.4.2", 0, True),         # a dirty tree on a release tag: not the release
])
def test_promotion_tags_equal_planning_tags(tmp_path: Path, tag: str, after: int, dirty: bool) -> None:
    """Promotion reads the manifest's recorded version facts; it must tag exactly as planning would."""
    from pipeline.release.promote import env_tags

    v = _repo_version(tmp_path, tag=tag, after=after, dirty=dirty)
    for kinds in [("semver", "semver-minor", "semver-major"), ("sha", "branch"), ("sha", "semver")]:
        target = env("prod", tags=kinds)
        assert env_tags(target, v.to_dict()) == tags_for(target, v), (tag, after, dirty, kinds)
    prod = env("prod", tags=("semver", "semver-minor", "semver-major"))
    moving = {"1", "1.4", "1.5"} & set(env_tags(prod, v.to_dict()))
    assert bool(moving) == (tag == "v1.4.2" and after == 0 and not dirty)
