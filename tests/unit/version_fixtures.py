"""Real temporary git repositories for the versioning tests (GitPython; commits without subprocesses)."""

from __future__ import annotations

import shutil
from pathlib import Path

import git

from pipeline.core.config import Config, Environment, Versioning, load_config
from pipeline.core.paths import ROOT


class Sandbox:
    """A git work tree under tmp_path with a local identity; commit() and tag() keep tests short."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        self.repo = git.Repo.init(path, initial_branch=branch)
        with self.repo.config_writer() as cw:
            cw.set_value("user", "name", "Versioning Tests")
            cw.set_value("user", "email", "versioning-tests@example.invalid")
            cw.set_value("tag", "gpgSign", "false")
            cw.set_value("commit", "gpgSign", "false")
        self._n = 0

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        """Commit message; each commit changes a file so the history is realistic."""
        self._n += 1
        for rel, text in (files or {"history.txt": f"change {self._n}\n"}).items():
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            self.repo.index.add([rel])
        return str(self.repo.index.commit(message).hexsha)

    def tag(self, name: str, ref: str = "HEAD", annotated: bool = True) -> None:
        if annotated:
            self.repo.create_tag(name, ref=ref, message=f"release {name}")
        else:
            self.repo.create_tag(name, ref=ref)

    def write(self, rel: str, text: str) -> None:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def describe(self) -> str:
        return str(self.repo.git.describe())


def project_config() -> Config:
    """The project's real pipeline.toml (its environments and services), without file checks."""
    return load_config(ROOT / "pipeline.toml", check_files=False)


def versioning(**over: str) -> Versioning:
    base = {"first_version": "0.1.0", "tag_prefix": "v", "breaking_below_1": "minor", "non_conventional": "none"}
    base.update(over)
    return Versioning(**base)


def env(name: str = "dev", tags: tuple[str, ...] = ("sha", "branch"), *, clean: bool = False,
        release_tag: bool = False) -> Environment:
    return Environment(
        name=name, registry="127.0.0.1:5000", registry_namespace="veza-test", kube_context="",
        namespace=f"veza-{name}", helm_release="veza", values_file=Path("values.yaml"), stages=("build",),
        tags=tags, scan_threshold="CRITICAL", ignore_unfixed=True, require_clean_tree=clean,
        require_release_tag=release_tag, confirm=False,
    )


def copy_config_into(repo_dir: Path) -> None:
    """Give a sandbox its own pipeline.toml so `VEZA_ROOT=<sandbox> invoke …` runs against it."""
    shutil.copy(ROOT / "pipeline.toml", repo_dir / "pipeline.toml")
