"""`invoke version / bump / changelog`: the functions on temporary repositories, and the real tasks in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import git
import pytest

from pipeline.core.config import Config
from pipeline.core.errors import GitStateError, PipelineError, UsageError
from pipeline.core.paths import ROOT
from pipeline.versioning.cli import bump_version, print_changelog, print_version
from tests.unit.version_fixtures import Sandbox, copy_config_into, project_config

INVOKE = ROOT / ".venv" / "bin" / "invoke"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return project_config()


def released(tmp_path: Path, tag: str = "v1.3.0") -> Sandbox:
    sb = Sandbox(tmp_path / "repo")
    sb.commit("feat: base", {"app.txt": "1\n"})
    sb.tag(tag)
    return sb


def tag_message(sb: Sandbox, tag: str) -> str:
    return str(sb.repo.git.tag("-l", "--format=%(contents)", tag))


def refusal(exc: pytest.ExceptionInfo[PipelineError]) -> str:
    line = exc.value.one_line()
    assert exc.value.exit_code == 2
    assert "\n" not in line
    return line


def test_bump_creates_an_annotated_tag_with_the_changelog(tmp_path: Path, cfg: Config,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    sb.commit("feat(api): add search")
    fix = sb.commit("fix: crash on empty query")
    head = sb.commit("chore: bump deps")
    assert bump_version(repo_path=sb.path, config=cfg) == "v1.4.0"
    assert sb.describe() == "v1.4.0"  # `git describe` sees annotated tags only
    assert sb.repo.git.cat_file("-t", "v1.4.0") == "tag"
    msg = tag_message(sb, "v1.4.0")
    assert msg.startswith("## 1.4.0 (since v1.3.0)\n")
    assert "### Features\n- **api:** add search (" in msg
    assert f"### Fixes\n- crash on empty query ({fix[:8]})" in msg
    assert "1 other commit(s)" in msg
    out = capsys.readouterr().out
    assert out == (f"created tag v1.4.0 on {head[:8]} (minor: 1 feat, 1 fix, 1 chore since v1.3.0)\n"
                   "publish it: git push origin v1.4.0\n")


def test_dry_run_creates_nothing(tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    sb.commit("fix: a")
    assert bump_version(dry_run=True, repo_path=sb.path, config=cfg) == "v1.3.1"
    assert "v1.3.1" not in [t.name for t in sb.repo.tags]
    assert capsys.readouterr().out.startswith("would create annotated tag v1.3.1 on ")


def test_first_bump_without_tags(tmp_path: Path, cfg: Config) -> None:
    sb = Sandbox(tmp_path / "repo")
    sb.commit("Initial import")
    assert bump_version(repo_path=sb.path, config=cfg) == "v0.1.0"
    assert sb.describe() == "v0.1.0"


def test_prerelease_sequence_with_bump(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    sb.commit("feat: big thing")
    assert bump_version(pre="rc", repo_path=sb.path, config=cfg) == "v1.4.0-rc.1"
    sb.commit("fix: found in rc.1")
    assert bump_version(pre="rc", repo_path=sb.path, config=cfg) == "v1.4.0-rc.2"
    assert sb.describe() == "v1.4.0-rc.2"
    # the rc becomes the release on the same commit
    assert bump_version(repo_path=sb.path, config=cfg) == "v1.4.0"
    assert sb.describe() == "v1.4.0"
    assert "big thing" in tag_message(sb, "v1.4.0") and "found in rc.1" in tag_message(sb, "v1.4.0")


def test_refuses_a_dirty_tree(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    sb.commit("feat: x")
    sb.write("app.txt", "edited\n")
    sb.write("new.txt", "untracked\n")
    with pytest.raises(GitStateError) as exc:
        bump_version(repo_path=sb.path, config=cfg)
    assert refusal(exc) == ("bump requires a clean tree: 2 uncommitted change(s) (app.txt, new.txt) "
                            "(fix: commit or remove them, then rerun)")
    assert [t.name for t in sb.repo.tags] == ["v1.3.0"]


def test_refuses_a_head_that_already_carries_a_release_tag(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    with pytest.raises(GitStateError) as exc:
        bump_version(part="minor", repo_path=sb.path, config=cfg)
    head = sb.repo.head.commit.hexsha[:8]
    assert refusal(exc).startswith(f"refusing to tag: HEAD {head} already carries the release tag v1.3.0 (fix: ")


def test_refuses_another_prerelease_on_a_prerelease_commit(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path, "v2.0.0-rc.1")
    with pytest.raises(GitStateError) as exc:
        bump_version(pre="rc", repo_path=sb.path, config=cfg)
    assert "already carries the pre-release tag v2.0.0-rc.1" in refusal(exc)
    assert "release 2.0.0 on this commit" in refusal(exc)


@pytest.mark.parametrize(("part", "pre", "expected"), [("auto", "alpha", "v1.4.0-alpha.1"), ("patch", None, "v1.3.1")])
def test_refuses_a_version_not_greater_than_the_last(tmp_path: Path, cfg: Config, part: str, pre: str | None,
                                                     expected: str) -> None:
    sb = released(tmp_path)
    sb.commit("feat: x")
    sb.tag("v1.4.0-rc.1")
    sb.commit("fix: y")
    with pytest.raises(GitStateError) as exc:
        bump_version(part=part, pre=pre, repo_path=sb.path, config=cfg)
    assert refusal(exc).startswith(f"refusing to tag {expected}: not greater than the last release v1.4.0-rc.1")


def test_refuses_when_nothing_to_release(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    sb.commit("docs: typo")
    sb.commit("Update readme")
    with pytest.raises(GitStateError) as exc:
        bump_version(repo_path=sb.path, config=cfg)
    line = refusal(exc)
    assert line.startswith("nothing to release: no feat, fix, perf or breaking commit since v1.3.0 "
                           "(1 docs, 1 non-conventional)")
    assert line.endswith("(fix: use --part patch|minor|major to force a bump)")
    assert bump_version(part="patch", repo_path=sb.path, config=cfg) == "v1.3.1"


def test_refuses_a_tag_name_taken_on_another_branch(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    side = sb.repo.create_head("side")
    sb.commit("feat: on main")
    side.checkout()
    sb.commit("feat: on side")
    sb.tag("v1.4.0")
    sb.repo.heads["main"].checkout()
    with pytest.raises(GitStateError) as exc:
        bump_version(repo_path=sb.path, config=cfg)
    assert refusal(exc).startswith("refusing to tag v1.4.0: the tag already exists")


def test_refuses_a_shallow_clone_without_visible_tag(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    for i in range(3):
        sb.commit(f"feat: {i}")
    clone = git.Repo.clone_from(f"file://{sb.path}", tmp_path / "ci", depth=1)
    with pytest.raises(GitStateError) as exc:
        bump_version(repo_path=clone.working_dir, config=cfg)
    assert "run: git fetch --unshallow --tags" in refusal(exc)


def test_bad_arguments_are_usage_errors(tmp_path: Path, cfg: Config) -> None:
    sb = released(tmp_path)
    with pytest.raises(UsageError, match="unknown --part 'huge'"):
        bump_version(part="huge", repo_path=sb.path, config=cfg)
    with pytest.raises(UsageError, match="invalid pre-release label 'rc.1'"):
        bump_version(pre="rc.1", repo_path=sb.path, config=cfg)


def test_changelog(tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    sb.commit("feat!: new config format\n\nBREAKING CHANGE: keys renamed")
    sb.commit("perf: faster start")
    sb.commit("fix(ui): alignment")
    text = print_changelog(repo_path=sb.path, config=cfg)
    assert text == capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "## 2.0.0 (since v1.3.0)"  # a breaking change after 1.0.0: major
    assert lines[lines.index("### Breaking changes") + 1].startswith("- new config format: keys renamed (")
    assert lines[lines.index("### Fixes") + 1].startswith("- **ui:** alignment (")
    assert lines[lines.index("### Performance") + 1].startswith("- faster start (")
    assert "### Features" not in lines
    since = print_changelog(since="HEAD~1", repo_path=sb.path, config=cfg)
    assert since.splitlines()[0] == "## Unreleased (since HEAD~1)" and "faster start" not in since
    with pytest.raises(GitStateError, match="unknown tag or revision 'v9.9.9'"):
        print_changelog(since="v9.9.9", repo_path=sb.path, config=cfg)


def test_print_version_json(tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    sb.commit("feat: x")
    sb.tag("release-2024")
    print_version("staging", as_json=True, repo_path=sb.path, config=cfg)
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    short = data["short_sha"]
    assert data["env"] == "staging" and data["next_version"] == "1.4.0"
    assert data["tags"] == [f"sha-{short}", f"1.4.0-dev.1.sha-{short}"]
    assert data["images"]["veza-backend-api"][0] == f"127.0.0.1:5000/veza-staging/veza-backend-api:sha-{short}"
    assert set(data["images"]) == {s.name for s in cfg.services}
    assert captured.err.startswith("warning: ignored 1 tag(s) that are not release tags")


def test_print_version_table(tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    sb = released(tmp_path)
    print_version("prod", repo_path=sb.path, config=cfg)
    out = capsys.readouterr().out
    # prod's registry as the config names it (a team's pipeline.toml names its own: the ci-local e2e's clone does)
    assert "v1.3.0 (HEAD)" in out and f"{cfg.env('prod').registry}/veza/veza-docs:1.3" in out


# ------------------------------------------------------------------ the real tasks

def _invoke(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_ROOT": str(root)}
    return subprocess.run([str(INVOKE), "-r", str(ROOT), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_invoke_version_json_in_the_project() -> None:
    cp = _invoke(["version", "--json"], ROOT)
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    assert data["schema"] == 1 and data["env"] == "local"
    assert data["sha"] == git.Repo(ROOT).head.commit.hexsha
    assert data["tags"][0].startswith(f"sha-{data['short_sha']}")


def test_invoke_bump_in_a_temporary_repository(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "repo")
    copy_config_into(sb.path)
    sb.commit("feat: base", {"app.txt": "1\n", "pipeline.toml": (sb.path / "pipeline.toml").read_text()})
    sb.tag("v0.2.0")
    sb.commit("feat: more")
    sb.write("app.txt", "dirty\n")
    refused = _invoke(["bump"], sb.path)
    assert refused.returncode == 2
    assert refused.stderr == ("error: bump requires a clean tree: 1 uncommitted change(s) (app.txt) "
                              "(fix: commit or remove them, then rerun)\n")
    sb.repo.git.checkout("--", "app.txt")
    done = _invoke(["bump"], sb.path)
    assert done.returncode == 0, done.stderr
    assert sb.describe() == "v0.3.0"
    again = _invoke(["bump"], sb.path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("error: refusing to tag: HEAD ")


def test_invoke_bump_tags_the_repository_veza_config_names(tmp_path: Path) -> None:
    """The project is where VEZA_CONFIG's pipeline.toml is, not the checkout the tasks are loaded from."""
    sb = Sandbox(tmp_path / "repo")
    copy_config_into(sb.path)
    sb.commit("feat: base", {"pipeline.toml": (sb.path / "pipeline.toml").read_text()})
    sb.tag("v0.4.0")
    sb.commit("fix: a bug")
    work_tags = git.Repo(ROOT).git.tag("-l")
    env = {k: v for k, v in os.environ.items() if k != "VEZA_ROOT"} | {"VEZA_CONFIG": str(sb.path / "pipeline.toml")}
    done = subprocess.run([str(INVOKE), "-r", str(ROOT), "bump"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert sb.describe() == "v0.4.1"
    assert git.Repo(ROOT).git.tag("-l") == work_tags
