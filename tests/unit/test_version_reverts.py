"""Issue 16, versioning: reverts cancel inside the range, configurable bump rules, shallow clones.

Real temporary repositories; reverts are made by `git revert` itself, so the messages are git's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from pipeline.core.config import BumpRule, Config
from pipeline.core.errors import GitStateError
from pipeline.tools.git import RawCommit
from pipeline.versioning.cli import bump_version, print_changelog, version_report
from pipeline.versioning.releaseinfo import release_info
from pipeline.versioning.version import (
    ConventionalCommit,
    ReleaseTag,
    parse_commit,
    read_version,
    resolve_reverts,
    shallow_gap,
)
from tests.unit.version_fixtures import Sandbox, project_config, versioning


@pytest.fixture(scope="module")
def cfg() -> Config:
    return project_config()


def released(tmp_path: Path, tag: str = "v1.2.0") -> Sandbox:
    sb = Sandbox(tmp_path / "repo")
    sb.commit("feat: base", {"app.txt": "1\n"})
    sb.tag(tag)
    return sb


def git_revert(sb: Sandbox, sha: str) -> str:
    sb.repo.git.revert("--no-edit", sha)
    return str(sb.repo.head.commit.hexsha)


def agree(sb: Sandbox, cfg: Config, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object], str]:
    """`version --json` facts and the changelog text, for the same repository."""
    data = version_report("dev", repo_path=sb.path, config=cfg)
    text = print_changelog(repo_path=sb.path, config=cfg)
    capsys.readouterr()
    return data, text


# ------------------------------------------------------------------ case 1: a revert inside the range

def test_breaking_change_reverted_in_the_range_cancels_out(tmp_path: Path, cfg: Config,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    bad = sb.commit("feat(api)!: drop the v1 endpoints\n\nBREAKING CHANGE: the v1 endpoints are gone")
    git_revert(sb, bad)
    sb.commit("fix: handle empty payloads")
    assert sb.repo.head.commit.parents[0].message.startswith('Revert "feat(api)!: drop the v1 endpoints"')
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.2.1" and data["bump"] == "patch"
    assert "Breaking" not in text and "drop the v1 endpoints" not in text
    assert text.startswith("## 1.2.1 (since v1.2.0)") and "handle empty payloads" in text
    assert "2 commit(s) left out: reverted within this range" in text


def test_revert_alone_in_the_range_leaves_nothing_to_release(tmp_path: Path, cfg: Config,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    git_revert(sb, sb.commit("feat: temporary"))
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] is None and data["bump"] is None
    assert "No feature, fix or breaking change." in text


def test_revert_of_a_released_commit_is_a_patch(tmp_path: Path, cfg: Config,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    sb = Sandbox(tmp_path / "repo")
    sb.commit("feat: base", {"app.txt": "1\n"})
    shipped = sb.commit("feat: shipped search", {"search.txt": "1\n"})
    sb.tag("v1.2.0")
    git_revert(sb, shipped)
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.2.1" and data["bump"] == "patch"
    assert "### Reverts" in text and 'Revert "feat: shipped search"' in text
    assert "### Features" not in text


def test_revert_of_a_revert_restores_the_original(tmp_path: Path, cfg: Config,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    feat = sb.commit("feat: search")
    undo = git_revert(sb, feat)
    git_revert(sb, undo)  # git >= 2.43 says `Reapply "feat: search"`, older `Revert "Revert …"`
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.3.0" and data["bump"] == "minor"
    assert "### Features" in text and "- search (" in text and "### Reverts" not in text


def test_three_reverts_deep_cancel_everything(tmp_path: Path, cfg: Config,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    a = sb.commit("feat!: new protocol")
    b = git_revert(sb, a)
    c = git_revert(sb, b)
    git_revert(sb, c)
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] is None and "Breaking" not in text


def test_revert_with_edited_subject_is_found_by_the_sha_in_its_body(tmp_path: Path, cfg: Config,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    bad = sb.commit("feat!: remove the export\n\nBREAKING CHANGE: no export")
    sb.commit(f"chore: undo the export removal, customers need it\n\nThis reverts commit {bad}.")
    sb.commit("fix: typo")
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.2.1" and "Breaking" not in text


def test_revert_without_sha_is_matched_by_subject(tmp_path: Path, cfg: Config,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    sb.commit("feat: beta flag")
    sb.commit('Revert "feat: beta flag"\n\nReverts veza/veza-platform#42')  # a web UI's revert message
    sb.commit("perf: faster cache")
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.2.1" and "beta flag" not in text


def test_angular_revert_type(tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    f = sb.commit("feat(ui): dark mode")
    sb.commit(f"revert: feat(ui): dark mode\n\nThis reverts commit {f[:12]}.")
    data, _ = agree(sb, cfg, capsys)
    assert data["next_version"] is None


def test_bump_tags_what_version_said_after_a_cancelled_breaking_change(tmp_path: Path, cfg: Config,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    git_revert(sb, sb.commit("feat!: drop v1\n\nBREAKING CHANGE: gone"))
    sb.commit("fix: empty payloads")
    assert bump_version(repo_path=sb.path, config=cfg) == "v1.2.1"
    message = str(sb.repo.git.tag("-l", "--format=%(contents)", "v1.2.1"))
    assert "Breaking" not in message and "empty payloads" in message


def _c(sha: str, message: str) -> ConventionalCommit:
    return parse_commit(RawCommit(sha, ("p",), message))


def test_resolve_reverts_pure() -> None:
    a = _c("a" * 40, "feat: a")
    b = _c("b" * 40, f'Revert "feat: a"\n\nThis reverts commit {"a" * 40}.')
    c = _c("c" * 40, f'Reapply "feat: a"\n\nThis reverts commit {"b" * 40}.')
    out = resolve_reverts([c, b, a])  # newest first
    assert [x.sha for x in out.effective] == ["a" * 40] and len(out.cancelled) == 1
    assert b.revert and b.reverts_sha == "a" * 40 and b.reverts_subject == "feat: a"
    lone = _c("d" * 40, f"Revert \"fix: old\"\n\nThis reverts commit {'e' * 40}.")
    assert resolve_reverts([lone]).effective == (lone,)


# ------------------------------------------------------------------ case 2: bump rules

@pytest.mark.parametrize(("message", "preset", "rules", "expected"), [
    ("refactor: split the parser", "conventional", (), None),
    ("refactor: split the parser", "commitizen", (), "1.2.1"),
    ("refactor: split the parser", "conventional", (BumpRule("patch", type="refactor"),), "1.2.1"),
    ("docs(readme): badges", "conventional", (BumpRule("patch", type="docs"),
                                              BumpRule("none", type="docs", scope="readme")), None),
    ("docs(api): endpoints", "conventional", (BumpRule("patch", type="docs"),
                                              BumpRule("none", type="docs", scope="readme")), "1.2.1"),
    ("feat: x", "semantic-release", (BumpRule("patch", type="refactor"),), "1.3.0"),  # no own rule: defaults
    ("style(core-ui): x", "conventional", (BumpRule("minor", type="style", scope="core-*"),), "1.3.0"),
    ("feat!: x", "conventional", (BumpRule("none", scope="no-release"),), "2.0.0"),
    ("feat(no-release)!: x", "conventional", (BumpRule("none", scope="no-release"),), None),
])
def test_bump_rules(tmp_path: Path, message: str, preset: str, rules: tuple[BumpRule, ...],
                    expected: str | None) -> None:
    sb = released(tmp_path)
    sb.commit(message)
    vcfg = versioning()
    v = read_version(sb.path, type(vcfg)(**{**vcfg.__dict__, "preset": preset, "bump_rules": rules}))
    assert (str(v.next.version) if v.next.version else None) == expected


def test_bump_rules_load_from_pipeline_toml(tmp_path: Path) -> None:
    from pipeline.core.config import load_config
    from pipeline.core.errors import ConfigError
    from pipeline.core.paths import ROOT

    rules = ('bump_rules = [{ type = "docs", scope = "readme", release = "none" }, '
             '{ type = "refactor", release = "patch" }]')
    text = (ROOT / "pipeline.toml").read_text().replace('preset = "conventional"',
                                                        f'preset = "commitizen"\n{rules}')
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    c = load_config(p, check_files=False)
    assert c.versioning.preset == "commitizen"
    assert c.versioning.bump_rules == (BumpRule("none", type="docs", scope="readme"),
                                       BumpRule("patch", type="refactor"))
    p.write_text(text.replace('release = "patch" }', 'release = "bugfix" }'))
    with pytest.raises(ConfigError, match=r"bump_rules\[1\]\.release: 'bugfix' is not allowed"):
        load_config(p, check_files=False)
    p.write_text(text.replace('{ type = "refactor", release = "patch" }', '{ release = "patch" }'))
    with pytest.raises(ConfigError, match="without any criterion"):
        load_config(p, check_files=False)


# ------------------------------------------------------------------ case 3: shallow clones

def _shallow_after_release(tmp_path: Path) -> Path:
    sb = released(tmp_path, "v1.3.0")
    for m in ("feat: one", "fix: two", "fix: three"):
        sb.commit(m)
    clone = git.Repo.clone_from(f"file://{sb.path}", tmp_path / "clone", depth=1)
    return Path(str(clone.working_dir))


def test_shallow_clone_next_version_is_unknown(tmp_path: Path, cfg: Config) -> None:
    path = _shallow_after_release(tmp_path)
    data = version_report("staging", repo_path=path, config=cfg)
    json.dumps(data)
    assert data["shallow"] is True and data["next_known"] is False
    assert data["next_version"] is None and data["bump"] is None and data["version"] is None
    assert "git fetch --unshallow --tags" in data["bump_reason"]
    assert data["tags"] == [f"sha-{data['short_sha']}"]  # no made-up semver tag below 1.3.0
    assert any(n.startswith("semver tag skipped: next version unknown") for n in data["tag_notes"])
    assert any("git fetch --unshallow --tags" in w for w in data["warnings"])


def test_shallow_clone_staging_and_prod_builds_refuse(tmp_path: Path, cfg: Config) -> None:
    path = _shallow_after_release(tmp_path)
    shallow_cfg = type(cfg)(**{**cfg.__dict__, "root": path})
    for env in ("staging", "prod"):
        with pytest.raises(GitStateError) as exc:
            release_info(shallow_cfg, cfg.env(env))
        assert exc.value.exit_code == 2 and "git fetch --unshallow --tags" in exc.value.one_line()
    assert release_info(shallow_cfg, cfg.env("dev")).tags[0].startswith("sha-")  # sha tags need no history
    with pytest.raises(GitStateError) as bump:
        bump_version(repo_path=path, config=cfg)
    assert bump.value.one_line() == ("refusing to tag: next version unknown: shallow clone with no final release "
                                     "tag in the fetched history (fix: run: git fetch --unshallow --tags)")


def test_unshallow_gives_the_real_next_version(tmp_path: Path, cfg: Config) -> None:
    path = _shallow_after_release(tmp_path)
    repo = git.Repo(path)
    repo.git.fetch("--unshallow", "--tags")
    data = version_report("staging", repo_path=path, config=cfg)
    assert data["next_known"] is True and data["next_version"] == "1.4.0"
    assert data["tags"][1].startswith("1.4.0-dev.3.sha-")


def test_shallow_gap_when_the_boundary_is_inside_the_range() -> None:
    tag = ReleaseTag("v1.0.0", __import__("semver").Version.parse("1.0.0"), "t" * 40)
    commits = (_c("a" * 40, "fix: a"), _c("b" * 40, "fix: b"))
    assert shallow_gap(False, None, commits, set()) is None
    assert shallow_gap(True, tag, commits, set()) is None
    assert "cuts the history since v1.0.0" in (shallow_gap(True, tag, commits, {"b" * 40}) or "")
    assert "no final release tag" in (shallow_gap(True, None, commits, set()) or "")


# ------------------------------------------------------------------ semver → image tag

def test_build_metadata_release_becomes_an_underscore_tag(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path, "v1.4.0+build.7")
    data = version_report("prod", repo_path=sb.path, config=cfg)
    assert data["last_version"] == "1.4.0+build.7" and data["tags"] == ["1.4.0_build.7", "1.4", "1"]


def test_semver_tag_rules() -> None:
    from pipeline.versioning.tagging import semver_tag

    assert semver_tag("1.2.3-rc.1+exp.sha.5114f85") == "1.2.3-rc.1_exp.sha.5114f85"
    assert len(semver_tag("1.0.0-" + "a" * 122)) == 128
    with pytest.raises(GitStateError, match="129 characters, the OCI limit is 128"):
        semver_tag("1.0.0-" + "a" * 123)


def test_shallow_clone_text_output(tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.versioning.cli import print_version

    path = _shallow_after_release(tmp_path)
    print_version("staging", repo_path=path, config=cfg)
    out = capsys.readouterr()
    assert "next version" in out.out and "unknown: next version unknown: shallow clone" in " ".join(out.out.split())
    assert "warning:" in out.err and "git fetch --unshallow --tags" in out.err


def test_revert_and_its_revert_of_released_work_cancel_out(tmp_path: Path, cfg: Config,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sb = Sandbox(tmp_path / "repo")
    sb.commit("feat: base", {"app.txt": "1\n"})
    shipped = sb.commit("feat: export", {"export.txt": "1\n"})
    sb.tag("v1.2.0")
    undo = git_revert(sb, shipped)   # a revert of released work…
    git_revert(sb, undo)             # …reverted again before any release: nothing changed
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] is None and "### Reverts" not in text


def test_invoke_version_json_in_a_shallow_ci_clone(tmp_path: Path) -> None:
    """The reported case, end to end: `git clone --depth 1`, three commits after v1.3.0, the real task."""
    import os
    import subprocess

    from pipeline.core.paths import ROOT
    from tests.unit.version_fixtures import copy_config_into

    sb = Sandbox(tmp_path / "repo")
    copy_config_into(sb.path)
    sb.repo.index.add(["pipeline.toml"])
    sb.commit("feat: base")
    sb.tag("v1.3.0")
    for m in ("feat: one", "fix: two", "fix: three"):
        sb.commit(m)
    clone = tmp_path / "ci"
    git.Repo.clone_from(f"file://{sb.path}", clone, depth=1)
    cp = subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), "-r", str(ROOT), "version", "--env", "staging",
                         "--json"], cwd=clone, env={**os.environ, "VEZA_ROOT": str(clone)}, capture_output=True,
                        text=True, timeout=60, check=False)
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    assert data["next_version"] is None and data["next_known"] is False and data["bump"] is None
    assert data["version"] is None and "no release tag yet" not in data["bump_reason"]
    assert all(not t.startswith("0.1.0") for t in data["tags"]) and data["tags"] == [f"sha-{data['short_sha']}"]
    assert "warning: " in cp.stderr and "git fetch --unshallow --tags" in cp.stderr


def test_shallow_clone_changelog_refuses_like_bump(tmp_path: Path, cfg: Config) -> None:
    path = _shallow_after_release(tmp_path)
    with pytest.raises(GitStateError) as exc:
        print_changelog(repo_path=path, config=cfg)
    assert exc.value.one_line().startswith("no changelog: next version unknown: shallow clone")
    assert "git fetch --unshallow --tags" in exc.value.one_line()


def test_shallow_clone_at_the_release_tag_still_releases(tmp_path: Path, cfg: Config) -> None:
    """A CI checkout of the tag itself (`--depth 1` at v1.3.0): the history needed is all there."""
    sb = released(tmp_path, "v1.2.0")
    sb.commit("feat: more")
    sb.tag("v1.3.0")
    clone = git.Repo.clone_from(f"file://{sb.path}", tmp_path / "ci", depth=1)
    path = Path(str(clone.working_dir))
    data = version_report("prod", repo_path=path, config=cfg)
    assert data["shallow"] and data["next_known"] and data["release"] and data["version"] == "1.3.0"
    assert data["tags"] == ["1.3.0", "1.3", "1"]
    shallow_cfg = type(cfg)(**{**cfg.__dict__, "root": path})
    assert release_info(shallow_cfg, cfg.env("prod")).tags == ("1.3.0", "1.3", "1")


def test_a_rule_can_turn_breaking_changes_into_minor(tmp_path: Path) -> None:
    sb = released(tmp_path, "v1.2.0")
    sb.commit("feat!: new wire format")
    vcfg = versioning()
    rules = (BumpRule("minor", breaking=True),)
    v = read_version(sb.path, type(vcfg)(**{**vcfg.__dict__, "bump_rules": rules}))
    assert str(v.next.version) == "1.3.0"


# ------------------------------------------------------------------ a reverted merge (git revert -m 1)

def _merge_feature_branch(sb: Sandbox, messages: list[str]) -> str:
    """A feature branch with `messages` merged into main with a merge commit (--no-ff); returns the merge SHA."""
    sb.repo.git.checkout("-b", "feature")
    for i, msg in enumerate(messages):
        sb.commit(msg, {f"feature{i}.txt": f"{i}\n"})
    sb.repo.git.checkout("main")
    sb.commit("docs: a main-line commit meanwhile", {"main.txt": "m\n"})
    sb.repo.git.merge("--no-ff", "--no-edit", "feature")
    return str(sb.repo.head.commit.hexsha)


def test_a_reverted_merge_cancels_the_commits_it_brought_in(tmp_path: Path, cfg: Config,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    merge = _merge_feature_branch(sb, ["feat(api)!: drop the v1 endpoints", "feat: add search"])
    sb.repo.git.revert("-m", "1", "--no-edit", merge)
    sb.commit("fix: handle empty payloads")
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.2.1" and data["bump"] == "patch", data
    assert "Breaking" not in text and "drop the v1 endpoints" not in text and "add search" not in text
    assert "handle empty payloads" in text
    assert "4 commit(s) left out: reverted within this range" in text  # merge, its revert, the 2 branch commits


def test_reapplying_a_reverted_merge_restores_its_commits(tmp_path: Path, cfg: Config,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    merge = _merge_feature_branch(sb, ["feat: add search"])
    sb.repo.git.revert("-m", "1", "--no-edit", merge)
    git_revert(sb, str(sb.repo.head.commit.hexsha))
    data, text = agree(sb, cfg, capsys)
    assert data["next_version"] == "1.3.0", data
    assert "add search" in text


def test_a_merge_reverted_to_its_second_parent_cancels_the_main_line_side(tmp_path: Path, cfg: Config,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`git revert -m 2` keeps the branch and undoes what the main line brought: the kept side stays."""
    sb = released(tmp_path)
    sb.repo.git.checkout("-b", "feature")
    sb.commit("fix: a branch fix", {"feature.txt": "f\n"})
    sb.repo.git.checkout("main")
    sb.commit("feat!: a main-line breaking change", {"main.txt": "m\n"})
    sb.repo.git.merge("--no-ff", "--no-edit", "feature")
    merge = str(sb.repo.head.commit.hexsha)
    sb.repo.git.revert("-m", "2", "--no-edit", merge)
    data, text = agree(sb, cfg, capsys)
    assert "a main-line breaking change" not in text and "a branch fix" in text
    assert data["next_version"] == "1.2.1", data
