"""What the reuse tests (test_registry_reuse.py, test_reuse_from_registry.py) share: a project's commits, removing
exactly the images a test built, and reading a registry's access log for blob uploads."""

from __future__ import annotations

from pathlib import Path


def commit_all(root: Path, message: str) -> str:
    """Commit everything under `root` (a repository made on the first call, branch main); the commit's SHA."""
    import git

    repo = git.Repo(root) if (root / ".git").exists() else git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.invalid")
    repo.git.add("-A")
    return str(repo.index.commit(message).hexsha)


def remove_image(image_id: str) -> None:
    """Remove one image a test built, with every tag on it (all of them that run's: its inputs are unique)."""
    import docker as docker_py

    try:
        docker_py.APIClient().remove_image(image_id, force=True)
    except docker_py.errors.ImageNotFound:
        pass


def blob_writes(log: str, repo: str) -> list[str]:
    """The registry's access-log lines that write blob data into `repo` ("" = any repository): an upload's PATCH or
    closing PUT. A cross-repository mount is one POST with `mount=`, and the push pre-flight's probe a POST then a
    DELETE: neither writes data."""
    return [line for line in log.splitlines()
            if any(f'"{verb} /v2/{repo}' in line and "/blobs/uploads/" in line for verb in ("PATCH", "PUT"))]
