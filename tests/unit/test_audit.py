"""The audit's reading of what runs (pipeline.release.audit): which digest a container runs, by the runtime's
report first, and every place the cluster and the Release manifest disagree (no cluster needed here)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.manifest import Manifest
from pipeline.release.audit import Running, Subject, containers_of, disagreements, running_digest

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
REPO = "127.0.0.1:5000/veza-dev/veza-docs"


def test_the_runtime_report_wins_over_the_spec() -> None:
    pinned = Running("p", "c", f"{REPO}@{D1}", f"docker-pullable://{REPO}@{D1}")
    assert running_digest(pinned) == (D1, f"{REPO}@{D1}", "remote")
    # the engine reports the digest under another repository it also holds: scanned from the spec's repository
    alias = Running("p", "c", f"{REPO}@{D1}", f"docker-pullable://127.0.0.1:5000/veza-local/veza-docs@{D1}")
    assert running_digest(alias) == (D1, f"{REPO}@{D1}", "remote")
    # by tag: the digest the runtime pulled, from its own repository
    tagged = Running("p", "c", f"{REPO}:main", f"docker-pullable://{REPO}@{D2}")
    assert running_digest(tagged) == (D2, f"{REPO}@{D2}", "remote")
    # an image only the node's engine holds (never pulled): its image ID, scanned from that engine
    local = Running("p", "c", "veza-local/postgres:15", f"docker://{D2}")
    assert running_digest(local) == (D2, D2, "docker")
    # containerd's form (no scheme) and a container not started yet
    assert running_digest(Running("p", "c", f"{REPO}@{D1}", f"{REPO}@{D1}"))[0] == D1
    assert running_digest(Running("p", "c", f"{REPO}@{D1}", "")) == (D1, f"{REPO}@{D1}", "remote")
    assert running_digest(Running("p", "c", f"{REPO}:main", "")) == ("", "", "")


def _manifest(tmp_path: Path, digest: str) -> Manifest:
    man = Manifest.new(tmp_path / "manifest.json", env="dev", release_id="dev-1", version={"sha": "0" * 40})
    for name in ("veza-docs", "veza-backend-api"):
        man.set_service(name, repository=f"127.0.0.1:5000/veza-dev/{name}", tags=["sha-1"], input_digest=D1)
        man.record(name, "push", {"status": "pushed", "digest": digest,
                                  "repository": f"127.0.0.1:5000/veza-dev/{name}"})
    return man


def test_every_disagreement_between_the_cluster_and_the_manifest_is_one_line(tmp_path: Path) -> None:
    cfg = load_config(check_files=False)
    man = _manifest(tmp_path, D1)
    running = [Running("docs-a", "docs", f"{REPO}@{D1}", f"docker-pullable://{REPO}@{D2}"),   # spec D1, runs D2
               Running("docs-b", "docs", f"{REPO}:main", f"docker-pullable://{REPO}@{D1}"),   # by tag
               Running("x", "x", "127.0.0.1:5000/other/thing@" + D1, "")]
    subjects = {D2: Subject(D2, f"{REPO}@{D2}", "remote", "service", "veza-docs", ["docs-a/docs"]),
                D1: Subject(D1, f"{REPO}@{D1}", "remote", "service", "veza-docs", ["docs-b/docs"]),
                "o": Subject(D1, f"127.0.0.1:5000/other/thing@{D1}", "remote", "unknown", "", ["x/x"])}
    lines = disagreements(cfg, man, running, subjects)
    assert f"docs-a/docs: runs {D2[:19]}…, its spec names {D1[:19]}…" in lines
    assert f"docs-b/docs: its spec names {REPO}:main by tag, not by digest" in lines
    assert f"veza-docs: runs {D2[:19]}…, the manifest records {D1[:19]}…" in lines
    assert f"veza-backend-api: the manifest records {D1[:19]}…, nothing runs it" in lines
    assert any("neither a service of the manifest nor an infra image" in line for line in lines)
    assert len(lines) == 5, lines
    # what runs exactly as recorded: nothing to say
    same = [Running("d", "docs", f"{REPO}@{D1}", f"docker-pullable://{REPO}@{D1}")]
    only = _manifest(tmp_path, D1)
    assert disagreements(cfg, only, same, {D1: Subject(D1, f"{REPO}@{D1}", "remote", "service", "veza-docs",
                                                       ["d/docs"])}) == [
        f"veza-backend-api: the manifest records {D1[:19]}…, nothing runs it"]
    assert disagreements(cfg, None, same, {}) == ["no Release manifest for this environment: nothing to compare with"]


def test_the_containers_of_live_pods_with_their_reported_image_ids() -> None:
    def pod(name: str, phase: str, *, init: bool = False) -> dict[str, object]:
        spec: dict[str, object] = {"containers": [{"name": "app", "image": f"{REPO}@{D1}"}]}
        status: dict[str, object] = {"phase": phase, "containerStatuses": [
            {"name": "app", "image": f"{REPO}@{D1}", "imageID": f"docker-pullable://{REPO}@{D1}"}]}
        if init:
            spec["initContainers"] = [{"name": "migrate", "image": f"{REPO}:main"}]
            status["initContainerStatuses"] = [{"name": "migrate", "imageID": f"docker://{D2}"}]
        return {"metadata": {"name": name}, "spec": spec, "status": status}

    got = containers_of({"items": [pod("a", "Running", init=True), pod("done", "Succeeded"), pod("b", "Pending")]})
    assert got == [Running("a", "migrate", f"{REPO}:main", f"docker://{D2}"),
                   Running("a", "app", f"{REPO}@{D1}", f"docker-pullable://{REPO}@{D1}"),
                   Running("b", "app", f"{REPO}@{D1}", f"docker-pullable://{REPO}@{D1}")]
    assert containers_of({"items": []}) == []


def test_ephemeral_containers_are_audited_too() -> None:
    """A `kubectl debug` container runs an image on the node like any other: it is listed (and so scanned)."""
    pod = {"metadata": {"name": "a"},
           "spec": {"containers": [{"name": "app", "image": f"{REPO}@{D1}"}],
                    "ephemeralContainers": [{"name": "debugger", "image": "busybox:1"}]},
           "status": {"phase": "Running",
                      "containerStatuses": [{"name": "app", "imageID": f"docker-pullable://{REPO}@{D1}"}],
                      "ephemeralContainerStatuses": [{"name": "debugger", "imageID": f"docker://{D2}"}]}}
    assert containers_of({"items": [pod]})[-1] == Running("a", "debugger", "busybox:1", f"docker://{D2}")


def test_only_the_whole_repository_makes_an_image_ours() -> None:
    from pipeline.core.config import load_config
    from pipeline.release.audit import _classify

    cfg = load_config(check_files=False)
    local = cfg.env("local")
    digest = "@sha256:" + "a" * 64
    assert _classify(cfg, local, None, local.repository(cfg.service("veza-docs")) + digest) == ("service", "veza-docs")
    assert _classify(cfg, local, None, "LOCALHOST:5000/veza-local/infra/redis" + digest) == ("infra", "redis")
    for foreign in ("evil.example/x/redis", "docker.io/library/postgres", "127.0.0.1:5000/veza-dev/veza-docs",
                    "127.0.0.1:5000/other/infra/nats"):
        assert _classify(cfg, local, None, foreign + digest) == ("unknown", ""), foreign
