"""Helpers of the environment e2e tests: fresh clones, `invoke` as a user runs it, reading the manifest and
report, comparing `invoke status` with the manifest, and removing a release and everything it left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INVOKE = ROOT / ".venv/bin/invoke"
HELM = ROOT / ".tools/bin/helm"
KUBECTL = ROOT / ".tools/bin/kubectl"
PORT_FORWARDS = "19750-19799"


def clone_repo(tmp: Path) -> Path:
    """A fresh clone of the committed tree (with its tags), with a git identity for commits and tags."""
    dest = tmp / "veza"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=120)
    for k, v in (("user.email", "e2e@example.invalid"), ("user.name", "e2e")):
        subprocess.run(["git", "-C", str(dest), "config", k, v], check=True, timeout=30)
    return dest


def tag_release(clone: Path) -> str:
    """An annotated release tag on the clone's HEAD: the next patch after its highest vX.Y.Z tag (v0.1.0 first).
    (`invoke bump` tags the repository it runs from, which in these tests is the work tree, not the clone.)"""
    tags = subprocess.run(["git", "-C", str(clone), "tag", "-l", "v*.*.*"], capture_output=True, text=True,
                          timeout=30, check=True).stdout.split()
    versions = sorted(tuple(int(x) for x in t[1:].split(".")) for t in tags if t[1:].replace(".", "").isdigit())
    nxt = (versions[-1][0], versions[-1][1], versions[-1][2] + 1) if versions else (0, 1, 0)
    name = "v" + ".".join(map(str, nxt))
    subprocess.run(["git", "-C", str(clone), "tag", "-a", name, "-m", f"release {name}"], check=True, timeout=30)
    return name


def signing_env(clone: Path) -> dict[str, str]:
    """The signing keys of the clone's environments live beside the clone (VEZA_KEY_DIR), never in the machine's
    key directory; their passphrase variables hold a throwaway test value (these keys sign test releases only)."""
    passphrase = "e2e-" + clone.parent.name  # not a secret: the key pair is deleted with the test's directory
    return {"VEZA_KEY_DIR": str(clone.parent / "keys"), "VEZA_SIGNING_PASSPHRASE": passphrase,
            "VEZA_STAGING_SIGNING_PASSPHRASE": passphrase, "VEZA_PROD_SIGNING_PASSPHRASE": passphrase}


def invoke_env(clone: Path, extra_env: dict[str, str] | None = None, drop_env: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment `invoke` runs with in `clone` (its pipeline.toml, CI, the releases' port-forward range, its
    signing keys), with `extra_env` over it and `drop_env` removed."""
    env = {**os.environ, "VEZA_CONFIG": str(clone / "pipeline.toml"), "CI": "true",
           "VEZA_PORT_FORWARD_PORTS": PORT_FORWARDS, **signing_env(clone), **(extra_env or {})}
    for name in drop_env:
        env.pop(name, None)
    return env


def invoke_argv(*args: str) -> list[str]:
    """The argv of `invoke ARGS` with this work tree's tasks."""
    return [str(INVOKE), "-r", str(ROOT), *args]


def invoke(clone: Path, *args: str, extra_env: dict[str, str] | None = None,
           drop_env: tuple[str, ...] = (), timeout: float = 3000) -> subprocess.CompletedProcess[str]:
    return subprocess.run(invoke_argv(*args), cwd=clone, env=invoke_env(clone, extra_env, drop_env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def flat(text: str) -> str:
    """Output with the reporter's line wrapping undone (every run of whitespace becomes one space)."""
    return " ".join(text.split())


def manifest(clone: Path, env: str) -> dict[str, Any]:
    """The environment's Release manifest (<state>/<env>/manifest.json)."""
    return json.loads((clone / ".pipeline" / env / "manifest.json").read_text())  # type: ignore[no-any-return]


def latest_report(clone: Path, env: str) -> dict[str, Any]:
    runs = sorted((clone / ".pipeline" / env / "runs").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())  # type: ignore[no-any-return]


def status_matches(clone: Path, env: str, **kw: Any) -> dict[str, Any]:
    """`invoke status --env ENV --json` says every service runs its manifest digest, all replicas ready."""
    st = invoke(clone, "status", "--env", env, "--json", **kw)
    assert st.returncode == 0, st.stdout + st.stderr
    info: dict[str, Any] = json.loads(st.stdout)
    assert info["status"] == "deployed", info
    for name, svc in info["services"].items():
        assert svc["matches_manifest"], (name, svc)
        assert svc["ready"] == svc["replicas"] >= 1, (name, svc)
    return info


def remove_release(kubeconfig: Path, namespace: str, release: str = "veza", context: str = "",
                   wait: bool = True) -> None:
    """Remove the release and everything it left: its namespace (the release's Helm records and every object of
    the chart are namespaced, so they go with it), its static PersistentVolumes and their host directories.
    Returns once the namespace's name is free again (tests/integration/cluster_fixtures.delete_namespace), or with
    `wait=False` once its deletion has begun (for a name no later test reuses). `release` is kept for callers that
    name it: deleting the namespace removes every release in it."""
    from pipeline.core.paths import CACHE_DIR
    from tests.integration.cluster_fixtures import delete_namespace

    del release
    delete_namespace(kubeconfig, namespace, context, wait=wait)
    kctx = ["--context", context] if context else []
    subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *kctx, "delete", "pv", "-l",
                    f"veza.io/namespace={namespace}", "--ignore-not-found", "--wait=false"], capture_output=True,
                   timeout=60, check=False)
    shutil.rmtree(CACHE_DIR / "volumes" / namespace, ignore_errors=True)


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    """kubectl with that kubeconfig; its stdout. AssertionError with its stderr when it fails."""
    res = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *args], input=input,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def provide_as_operators(kubeconfig: Path, namespace: str, volume: str, storage_class: str,
                         tmp: Path, *, registry: str, capacity: str = "1Gi") -> dict[str, Any]:
    """What the operators of an external cluster provide before a release, with their own (admin) access: the
    namespace, the Secret and PostgreSQL/Redis/NATS (ensure_local_infra, on pinned images in `registry`:
    deploy_support.pinned_infra_images), and a PersistentVolume `volume` of `storage_class` and `capacity` (at
    least the claim's request) pre-bound to the stream server's claim. Returns the infra values a team puts in
    its values file.
    The caller removes them (remove_release, and the PersistentVolume)."""
    from pipeline.core.config import load_config
    from pipeline.local.infra import ensure_local_infra
    from pipeline.tools.kubectl import KubeTarget
    from tests.integration.deploy_support import pinned_infra_images

    kubectl(kubeconfig, "create", "namespace", namespace)
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    infra_file = ensure_local_infra(cfg, KubeTarget(kubeconfig, "", namespace), "veza-secrets", tmp,
                                    pinned_infra_images(cfg, registry), say=lambda _: None)
    host_dir = tmp / "streams"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    pv = {"apiVersion": "v1", "kind": "PersistentVolume",
          "metadata": {"name": volume, "labels": {"veza.io/namespace": namespace}},
          "spec": {"capacity": {"storage": capacity}, "accessModes": ["ReadWriteOnce"],
                   "storageClassName": storage_class,
                   "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": str(host_dir)},
                   "claimRef": {"namespace": namespace, "name": "veza-stream-server"}}}
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(pv))
    infra: dict[str, Any] = yaml.safe_load(infra_file.read_text())["infra"]
    return infra


def commit(clone: Path, message: str) -> None:
    """Commit everything the test changed in its clone."""
    subprocess.run(["git", "-C", str(clone), "add", "-A"], check=True, timeout=60)
    subprocess.run(["git", "-C", str(clone), "commit", "-qm", message], check=True, timeout=60)


def local_env_in_namespace(clone: Path, namespace: str) -> None:
    """Point the clone's local environment at a namespace of its own (cluster and registry) and drop its scan
    stage (the scan e2e covers it; these tests are about what runs), then commit."""
    toml = clone / "pipeline.toml"
    text = toml.read_text()
    local = 'stages = ["build", "scan", "push", "sign", "verify-images", "migrate", "deploy"]'
    assert local in text
    text = text.replace(local, 'stages = ["build", "push", "sign", "verify-images", "migrate", "deploy"]', 1)
    text = text.replace('registry_namespace = "veza-local"', f'registry_namespace = "{namespace}"', 1)
    text = text.replace('namespace = "veza-local"', f'namespace = "{namespace}"', 1)
    toml.write_text(text)
    commit(clone, "test: the local environment in a namespace of its own")


def remove_pushed(registry: str, namespace: str) -> None:
    """Delete what the releases pushed under `namespace` in the machine registry (every manifest of its
    repositories: its storage has delete enabled) and untag the engine's images of that namespace."""
    from pipeline.tools.registry_api import RegistryClient

    client = RegistryClient(registry)
    for repo in [r for r in client.catalog() if r.startswith(f"{namespace}/")]:
        for tag in client.tags(repo):
            ref = client.head_manifest(repo, tag)
            if ref is not None:
                client.request("DELETE", f"/v2/{repo}/manifests/{ref.digest}", ok=(202, 404))
    tags: list[str] = []
    for pattern in (f"{registry}/{namespace}/*", f"{registry}/{namespace}/*/*"):   # services, infra/<name>
        listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", pattern],
                                capture_output=True, text=True, timeout=60, check=True)
        tags += [t for t in listed.stdout.split() if not t.endswith(":<none>")]
    if tags:
        subprocess.run(["docker", "rmi", *tags], capture_output=True, timeout=120, check=False)


@contextmanager
def namespace_of_its_own(kubeconfig: Path, registry: str, namespace: str, port_range: str = "") -> Iterator[None]:
    """For an e2e's clone that releases into `namespace`: its release removed before and after, what it pushed
    under `namespace` removed afterwards, and, with `port_range` ("LO-HI"), the port-forwards the test itself opens
    (kubectl.PORT_RANGE_ENV) kept in that range meanwhile."""
    from pipeline.tools.kubectl import PORT_RANGE_ENV

    remove_release(kubeconfig, namespace)
    old = os.environ.get(PORT_RANGE_ENV)
    if port_range:
        os.environ[PORT_RANGE_ENV] = port_range
    try:
        yield
    finally:
        if port_range:
            if old is None:
                os.environ.pop(PORT_RANGE_ENV, None)
            else:
                os.environ[PORT_RANGE_ENV] = old
        remove_release(kubeconfig, namespace)
        remove_pushed(registry, namespace)


def kill_port_forwards(namespace: str, port_range: str) -> None:
    """SIGKILL, by pid, the `kubectl port-forward` processes of `namespace` a killed release left (each runs in a
    session of its own, so they outlive it), only those bound to a port in `port_range` ("LO-HI", the release's
    VEZA_PORT_FORWARD_PORTS): the test's own forwards of that namespace, on other ports, live on."""
    lo, hi = (int(x) for x in port_range.split("-"))
    prefixes = tuple(f"{p}:".encode() for p in range(lo, hi + 1))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"port-forward" in argv and namespace.encode() in b" ".join(argv) \
                and any(a.startswith(prefixes) for a in argv):
            os.kill(int(proc.name), signal.SIGKILL)
