"""A tiny real project (git repo, three services, FROM-scratch Dockerfiles) for build-stage tests."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config

DOCKERFILE = """\
ARG BASE_IMAGE=scratch
FROM ${BASE_IMAGE}
ARG GREETING=hello
ARG VERSION=dev
ARG REVISION=unknown
LABEL greeting=${GREETING}
COPY . /app/
USER 1001
"""

CONFIG = """
[project]
name = "mini"
source_url = "https://example.invalid/mini"

[registry]
address = "127.0.0.1:5999"
namespace = "mini-{run}"

[bases.base]
upstream = "example.invalid/mini-base:{run}"
local = "mini-base-{run}:local"
recipe = "none"
build_arg = "BASE_IMAGE"

[[services]]
name = "alpha"
context = "services/alpha"
dockerfile = "dockerfiles/alpha.Dockerfile"
port = 9001
bases = ["base"]

[[services]]
name = "beta"
context = "services/beta"
dockerfile = "dockerfiles/beta.Dockerfile"
port = 9002
bases = ["base"]
build_args = {{ GREETING = "hi" }}

[[services]]
name = "gamma"
context = "services/gamma"
dockerfile = "dockerfiles/gamma.Dockerfile"
port = 9003

[environments.dev]
namespace = "mini-dev"
values_file = "values.yaml"
stages = ["build"]
tags = ["sha", "branch"]
"""


@dataclass
class MiniProject:
    root: Path
    run: str

    @property
    def config(self) -> Config:
        return load_config(self.root / "pipeline.toml")

    def write(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def init_repo(self) -> None:
        """`git init` (branch main) with a local identity, and .pipeline/ ignored."""
        import git

        self.write(".gitignore", ".pipeline/\n")
        repo = git.Repo.init(self.root, initial_branch="main")
        with repo.config_writer() as cw:
            cw.set_value("user", "name", "Test")
            cw.set_value("user", "email", "test@example.invalid")

    def commit(self, msg: str = "chore: change") -> None:
        import git

        repo = git.Repo(self.root)
        repo.git.add("-A")
        repo.index.commit(msg)

    def image_ids(self) -> dict[str, str]:
        from pipeline.core.manifest import Manifest

        m = Manifest.load(self.root / ".pipeline" / "dev" / "manifest.json")
        return {s: m.service(s)["build"]["image_id"] for s in m.services()}


def make_base_image(ref: str, content: str, run: str) -> str:
    """A tiny base image made with `docker import` (no pull possible here); returns its ID."""
    import docker

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = content.encode()
        info = tarfile.TarInfo("etc/base-marker")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    repo, tag = ref.rsplit(":", 1)
    api = docker.APIClient()
    api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                               changes=[f"LABEL veza.pipeline.run={run}"])
    return str(api.inspect_image(ref)["Id"])


def remove_run_images(run: str) -> None:
    """Remove every image a mini-project run made: its service images and its bases."""
    import docker

    api = docker.APIClient()
    # Service images first: a base cannot be removed while images built on it exist.
    doomed = [img["Id"] for img in api.images(filters={"label": "veza.pipeline.input-digest"})
              if any(f"mini-{run}/" in t for t in img.get("RepoTags") or [])]
    doomed += [img["Id"] for img in api.images(filters={"label": f"veza.pipeline.run={run}"})]
    for image_id in dict.fromkeys(doomed):
        try:
            api.remove_image(image_id, force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture
def mini_project(tmp_path: Path, docker_client: object) -> Iterator[MiniProject]:

    run = "b" + uuid.uuid4().hex[:8]
    root = tmp_path / "mini"
    root.mkdir()
    proj = MiniProject(root, run)
    proj.write("pipeline.toml", CONFIG.format(run=run))
    for svc in ("alpha", "beta", "gamma"):
        proj.write(f"dockerfiles/{svc}.Dockerfile", DOCKERFILE)
        proj.write(f"services/{svc}/main.txt", f"{svc} v1\n")
        proj.write(f"services/{svc}/.dockerignore", "*.tmp\nnotes/\n")
    proj.init_repo()
    make_base_image(f"mini-base-{run}:local", "base v1", run)
    proj.commit("feat: initial")
    yield proj
    remove_run_images(run)
