"""`invoke ci-local`: the GitLab template run job by job (gitlab-ci-local, shell executor, each job in its own copy,
sharing only artifacts), against an engine that is not the machine's: the second dockerd over TCP+TLS
(tests/integration/remote_engine.py), and a registry that is not the machine's: the TLS + htpasswd registry on
127.0.0.2 (tests/integration/tls_registry_fixtures.py), which the clone's pipeline.toml names for dev as a team
would (dev_registry_config: its CA as the file variable VEZA_DEV_REGISTRY_CA_FILE, push and pull credentials by
variable names). The cluster is reached only through the kubeconfig the CI variable holds (the local cluster's,
its context renamed, as a secret store would hold it); what its operators provide (namespace, Secret,
PostgreSQL/Redis/NATS, a volume, and the node's trust of dev's registry CA through `invoke cluster-up --env dev`,
pipeline/local/cluster/registry_trust.py) is set up by the test as them.

- branch pipeline: lint → build → scan, smoke → push → deploy-dev; then `invoke status --env dev` exit 0, every
  service on its manifest digest; every release pod runs an image of the TLS registry, pulled through the
  dockerconfigjson pull Secret (the node's engine has no other credential for it).
- tag pipeline on a fresh engine (the branch's images removed from it, as a new dind service has none): prod builds
  nothing; it finds each service's input digest in dev's repository of the TLS registry and takes the image only
  because dev's public key, given to release-prod as VEZA_DEV_SIGNING_PUBLIC_KEY, verifies its signature and
  provenance: the key ci-local keeps for dev and handed the branch pipeline's deploy-dev (VEZA_DEV_SIGNING_KEY), so
  both pipelines sign and trust with one kept pair, never one made on a runner. Each image is copied by digest into
  prod's repository and signed with prod's key; the manifest records why (reused from dev's …, signed and attested
  by dev's keys).
- tag pipeline without its signing variables: refused at once, one line naming them, exit 2, no job run.
Namespaces veza-ci-dev and veza-ci-prod (the clone renames dev's and prod's), its own registry and port-forward
range (127.0.0.1:19800-19849): the test runs in the second cluster lane, beside the other e2e releases
(tests/lanes.py), holding the cluster shared.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import yaml

from pipeline.local.cluster import registry_trust
from tests.e2e.release_support import (
    clone_repo,
    flat,
    kubectl,
    provide_as_operators,
    remove_release,
    signing_env,
    status_matches,
    tag_release,
)
from tests.e2e.release_support import invoke as _invoke
from tests.integration.remote_engine import RemoteEngine
from tests.integration.tls_registry_fixtures import TlsRegistry

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.cluster_parallel,
              pytest.mark.slow]

NAMESPACE = "veza-ci-dev"
CONTEXT = "veza-ci-dev"
PULL_SECRET = "registry-secret"
PROD_NAMESPACE = "veza-ci-prod"
PORT_FORWARDS = "19800-19849"   # its own: other e2e releases use release_support.PORT_FORWARDS meanwhile
NAMESPACES = {"dev": NAMESPACE, "prod": PROD_NAMESPACE}


def invoke(clone: Path, *args: str, extra_env: dict[str, str] | None = None, **kw: object) -> CompletedProcess[str]:
    """release_support.invoke with this file's port-forward range (which ci-local hands the jobs: a VEZA_* name)."""
    return _invoke(clone, *args, extra_env={"VEZA_PORT_FORWARD_PORTS": PORT_FORWARDS, **(extra_env or {})},
                   **kw)  # type: ignore[arg-type]


def registry_keys(env: str) -> dict[str, str]:
    """What the team names in pipeline.toml for `env`'s registry (README, "CI"): its CA as a file variable, push
    and pull credentials by variable names."""
    e = env.upper()
    return {"registry_ca_file": f"$VEZA_{e}_REGISTRY_CA_FILE",
            "registry_username_env": f"VEZA_{e}_PUSH_USER", "registry_password_env": f"VEZA_{e}_PUSH_PASSWORD",
            "pull_username_env": f"VEZA_{e}_PULL_USER", "pull_password_env": f"VEZA_{e}_PULL_PASSWORD",
            "pull_secret": PULL_SECRET}


def env_registry_config(clone: Path, env: str, address: str) -> None:
    """The clone's [environments.ENV] pushes to `address` and the cluster pulls from it (registry_keys)."""
    keys = registry_keys(env)
    text = (clone / "pipeline.toml").read_text()
    head, sep, rest = text.partition(f"[environments.{env}]\n")
    body, nxt, tail = rest.partition("\n[")
    assert sep, f"pipeline.toml has no [environments.{env}] table"
    lines = [ln for ln in body.splitlines() if ln.split("=")[0].strip() not in ("registry", "namespace", *keys)]
    lines += [f'registry = "{address}"', f'namespace = "{NAMESPACES[env]}"', *(f'{k} = "{v}"' for k, v in keys.items())]
    (clone / "pipeline.toml").write_text(head + sep + "\n".join(lines) + "\n" + nxt + tail)


def github_secrets(clone: Path, *envs: str) -> None:
    """The clone's GitHub workflow hands the variables registry_keys names to every step that reaches a registry
    (beside the default VEZA_REGISTRY_* ones), as a team that names them must: the lint job's unit tests hold the
    workflow to pipeline.toml (test_ci_workflows.py)."""
    path = clone / ".github/workflows/release.yml"
    anchor = "VEZA_REGISTRY_PASSWORD: ${{ secrets.VEZA_REGISTRY_PASSWORD }}\n"
    names = [v.lstrip("$") for e in envs for k, v in registry_keys(e).items() if k != "pull_secret"]
    out = []
    for line in path.read_text().splitlines(keepends=True):
        out.append(line)
        if line.endswith(anchor):
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}{n}: ${{{{ secrets.{n} }}}}\n" for n in names]
    assert len(out) > len(path.read_text().splitlines()), f"no {anchor.strip()} in {path}"
    path.write_text("".join(out))


def pin_upstreams(clone: Path, pins: dict[str, str]) -> None:
    """The clone's [bases.*] upstreams pinned by digest (`upstream = "name:tag@sha256:…"`): a runner's engine pulls
    a base only by its pin (pipeline/local/bases.py), from the mirror a team's runners use."""
    text = (clone / "pipeline.toml").read_text()
    for upstream, pinned in pins.items():
        text = text.replace(f'upstream = "{upstream}"', f'upstream = "{pinned}"')
    (clone / "pipeline.toml").write_text(text)


def registry_env(tls: TlsRegistry, *envs: str) -> dict[str, str]:
    """The variables registry_keys names, as the team sets them (one htpasswd user pushes and pulls here)."""
    out: dict[str, str] = {}
    for env in envs or ("dev",):
        e = env.upper()
        out |= {f"VEZA_{e}_REGISTRY_CA_FILE": str(tls.ca_file), f"VEZA_{e}_PUSH_USER": tls.username,
                f"VEZA_{e}_PUSH_PASSWORD": tls.password, f"VEZA_{e}_PULL_USER": tls.username,
                f"VEZA_{e}_PULL_PASSWORD": tls.password}
    return out


@pytest.fixture
def node_trusts(tls_registry: TlsRegistry, local_cluster: Path) -> Iterator[dict[str, Path]]:
    """Where the node's trust of dev's and prod's registry CA will be written (by `invoke cluster-up --env ENV`,
    as the cluster's operators run it); removed afterwards."""
    paths = {env: registry_trust.trust_path(env, tls_registry.address) for env in ("dev", "prod")}
    assert not any(p.exists() for p in paths.values()), paths
    try:
        yield paths
    finally:
        for env in paths:
            registry_trust.forget(env, tls_registry.address)


def _secret_kubeconfig(local_cluster: Path, dest: Path) -> Path:
    """The local cluster's kubeconfig as a CI secret would hold it: its own context name, nothing else."""
    doc = yaml.safe_load(local_cluster.read_text())
    doc["contexts"][0]["name"] = CONTEXT
    doc["current-context"] = CONTEXT
    dest.write_text(yaml.safe_dump(doc))
    dest.chmod(0o600)
    return dest


def _default_class(kubeconfig: Path) -> str:
    """The class a claim that names none gets (the cluster's default StorageClass), "" when there is none: dev's
    values name no class, so the operators' volume must be of this one to bind."""
    classes = json.loads(kubectl(kubeconfig, "get", "storageclass", "-o", "json"))["items"]
    default = [c["metadata"]["name"] for c in classes if c["metadata"].get("annotations", {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]
    return default[0] if default else ""


@pytest.fixture
def dev_operators(tmp_path: Path, local_cluster: Path, machine_registry: str) -> Iterator[dict[str, object]]:
    """The operators' side of dev (release_support.provide_as_operators); removed afterwards."""
    pv_name = f"{NAMESPACE}-ci-streams"
    remove_release(local_cluster, NAMESPACE)
    kubectl(local_cluster, "delete", "pv", pv_name, "--ignore-not-found")
    try:
        yield provide_as_operators(local_cluster, NAMESPACE, pv_name, _default_class(local_cluster), tmp_path,
                                   registry=machine_registry)
    finally:
        remove_release(local_cluster, NAMESPACE)
        kubectl(local_cluster, "delete", "pv", pv_name, "--ignore-not-found", "--wait=false")


@pytest.fixture
def prod_operators(tmp_path: Path, local_cluster: Path, machine_registry: str) -> Iterator[dict[str, object]]:
    """The operators' side of prod, as dev_operators (its volume as large as prod's claim); removed afterwards."""
    pv_name = f"{PROD_NAMESPACE}-ci-streams"
    remove_release(local_cluster, PROD_NAMESPACE)
    kubectl(local_cluster, "delete", "pv", pv_name, "--ignore-not-found")
    (tmp_path / "prod-ops").mkdir()
    try:
        yield provide_as_operators(local_cluster, PROD_NAMESPACE, pv_name, _default_class(local_cluster),
                                   tmp_path / "prod-ops", registry=machine_registry, capacity="50Gi")
    finally:
        remove_release(local_cluster, PROD_NAMESPACE)
        kubectl(local_cluster, "delete", "pv", pv_name, "--ignore-not-found", "--wait=false")


def _ci_env(engine: RemoteEngine, kubeconfig: Path, tls: TlsRegistry) -> dict[str, str]:
    """What the team sets in GitLab, as ci-local reads it: the dind engine's variables, the kubeconfig secret,
    dev's registry CA and credentials."""
    return {**engine.env(), "DEV_KUBECONFIG": str(kubeconfig), **registry_env(tls, "dev")}


def _release_pods(kubeconfig: Path, namespace: str = NAMESPACE) -> list[dict[str, object]]:
    pods = json.loads(kubectl(kubeconfig, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance=veza",
                              "-o", "json"))["items"]
    return [p for p in pods if p["status"].get("phase") == "Running"]


def _pulled_from(kubeconfig: Path, namespace: str, repository_prefix: str, manifest: dict[str, object]) -> None:
    """Every running release pod of `namespace` runs an image under `repository_prefix` by one of the manifest's
    pushed digests (an image the machine's engine never held: the remote engine built it), through the Secret."""
    services = manifest["services"]
    digests = {rec["push"]["digest"] for rec in services.values()}   # type: ignore[attr-defined]
    pods = _release_pods(kubeconfig, namespace)
    assert len(pods) >= len(services), [p["metadata"]["name"] for p in pods]   # type: ignore[arg-type,index]
    for pod in pods:
        spec, statuses = pod["spec"], pod["status"]["containerStatuses"]   # type: ignore[index]
        assert {"name": PULL_SECRET} in spec["imagePullSecrets"], pod["metadata"]   # type: ignore[index]
        for ctr in spec["containers"]:   # type: ignore[index]
            repository, _, digest = ctr["image"].partition("@")
            assert repository.startswith(repository_prefix) and digest in digests, ctr["image"]
        for st in statuses:   # what the node runs: one of those digests (its engine names the first repository
            assert st["imageID"].rsplit("@", 1)[-1] in digests, st   # it pulled the content from)
    secret = json.loads(kubectl(kubeconfig, "-n", namespace, "get", "secret", PULL_SECRET, "-o", "json"))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"


def _as_operators(clone: Path, tls: TlsRegistry, env: str, trust: Path) -> None:
    """The operators' side of the node: the pipeline's own cluster-up writes its trust of ENV's registry CA."""
    up = invoke(clone, "cluster-up", "--env", env, extra_env=registry_env(tls, env),
                drop_env=(f"VEZA_{env.upper()}_KUBECONFIG",), timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert trust.read_text() == tls.ca_file.read_text(), flat(up.stdout)


def _statuses(manifest: dict[str, object]) -> dict[str, str]:
    return {name: rec["build"]["status"] for name, rec in manifest["services"].items()}   # type: ignore[attr-defined]


def test_branch_then_tag_pipeline_release_dev_and_prod_through_the_remote_engine_and_tls_registry(
        tmp_path: Path, local_cluster: Path, machine_registry: str, remote_engine: RemoteEngine,
        tls_registry: TlsRegistry, node_trusts: dict[str, Path], dev_operators: dict[str, object],
        prod_operators: dict[str, object]) -> None:
    clone = clone_repo(tmp_path)
    for env, infra in (("dev", dev_operators), ("prod", prod_operators)):
        values = yaml.safe_load((clone / f"helm/veza/values-{env}.yaml").read_text())
        values["infra"] = infra   # only the infra hosts: the lint job's unit tests hold the other values
        (clone / f"helm/veza/values-{env}.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        env_registry_config(clone, env, tls_registry.address)
    github_secrets(clone, "dev", "prod")
    pin_upstreams(clone, remote_engine.base_pins)
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "chore: dev's and prod's infra and registry, as "
                    "their operators run them; the upstream bases pinned by digest"], check=True, timeout=60)
    for env in ("dev", "prod"):
        _as_operators(clone, tls_registry, env, node_trusts[env])
    kc = _secret_kubeconfig(local_cluster, tmp_path / "dev-kubeconfig")
    t0 = time.monotonic()
    run = invoke(clone, "ci-local", "--pipeline", "branch", extra_env=_ci_env(remote_engine, kc, tls_registry),
                 drop_env=("KUBECONFIG",), timeout=3600)
    took = time.monotonic() - t0
    out = flat(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    passed = set(re.findall(r"PASS \[[^\]]+\] ([a-z-]+)", out))
    assert passed == {"lint", "build", "scan", "smoke", "push", "deploy-dev"}, (passed, out[-4000:])
    # Every job's bootstrap used the engine it was given, installing no Docker (issue 26, item 5).
    assert out.count("Debian's docker.io not needed") == 6 and "installing apt packages" not in out
    # The images were built by the remote engine: the manifest's image IDs are in it.
    manifest = json.loads((clone / ".pipeline/dev/manifest.json").read_text())
    ids = {rec["build"]["image_id"] for rec in manifest["services"].values()}
    assert ids, manifest
    # push's manifest (its artifacts, as gitlab-ci-local kept them) holds scan's and smoke's records: each job was
    # handed one copy, carrying the earlier jobs' (gitlab-ci-local copies several producers' artifacts at once)
    pushed = json.loads((clone / ".gitlab-ci-local/artifacts/push/.pipeline/dev/manifest.json").read_text())
    assert {s: pushed["stages"].get(s, {}).get("status") for s in ("scan", "smoke", "push")} == \
        dict.fromkeys(("scan", "smoke", "push"), "ok"), pushed["stages"]
    for image_id in ids:
        assert remote_engine.docker("image", "inspect", image_id).returncode == 0, image_id
    assert tls_registry.password not in run.stdout + run.stderr
    # deploy-dev signed with dev's kept pair, which ci-local keeps beside the clone (VEZA_KEY_DIR) and handed over.
    dev_keys = (Path(signing_env(clone)["VEZA_KEY_DIR"]) / "dev").resolve()
    assert f"ci-local: dev's signing key: the pair kept in {dev_keys} " in out, out[:2000]
    dev_key_text = (dev_keys / "cosign.key").read_text()
    assert dev_key_text.splitlines()[1] not in out and (dev_keys / "passphrase").read_text() not in out
    assert manifest["stages"]["sign"]["status"] == "ok", manifest["stages"]["sign"]
    status_matches(clone, "dev", extra_env={"VEZA_PORT_FORWARD_PORTS": PORT_FORWARDS, "VEZA_DEV_KUBECONFIG": str(kc),
                                            **registry_env(tls_registry, "dev")},
                   drop_env=("KUBECONFIG",))
    # The cluster pulled the release from the TLS registry, through the pull Secret.
    _pulled_from(local_cluster, NAMESPACE, f"{tls_registry.address}/veza-dev/", manifest)
    print(f"ci-local branch pipeline: {took:.0f}s")
    remove_release(local_cluster, NAMESPACE)   # dev is shown; the node's room goes to prod's replicas

    # The tag pipeline on the same commit, on a fresh engine: none of the branch's images is left in it (the bases
    # and infra images stay, as a runner's mirror gives them), so nothing can be reused from the engine.
    gone = remote_engine.docker("rmi", "-f", *sorted(ids))
    assert gone.returncode == 0, gone.stderr
    assert all(remote_engine.docker("image", "inspect", i).returncode != 0 for i in ids)
    tag = tag_release(clone)
    made = invoke(clone, "keygen", "--env", "prod")
    assert made.returncode == 0, made.stdout + made.stderr
    key = Path(signing_env(clone)["VEZA_KEY_DIR"]) / "prod" / "cosign.key"
    prod_kc = _secret_kubeconfig(local_cluster, tmp_path / "prod-kubeconfig")
    t0 = time.monotonic()
    run = invoke(clone, "ci-local", "--pipeline", "tag", timeout=3600, drop_env=("KUBECONFIG",),
                 extra_env={**_ci_env(remote_engine, kc, tls_registry), **registry_env(tls_registry, "prod"),
                            "PROD_KUBECONFIG": str(prod_kc), "VEZA_PROD_SIGNING_KEY": str(key)})
    took = time.monotonic() - t0
    out = flat(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    passed = set(re.findall(r"PASS \[[^\]]+\] ([a-z-]+)", out))
    assert passed == {"lint", "build", "scan", "smoke", "release-prod"}, (passed, out[-4000:])
    assert tls_registry.password not in out and key.read_text().strip() not in out
    prod = json.loads((clone / ".pipeline/prod/manifest.json").read_text())
    assert prod["version"]["sha"] == manifest["version"]["sha"], (prod["version"], manifest["version"])
    assert tag.removeprefix("v") in json.dumps(prod["version"]), prod["version"]
    dev_again = json.loads((clone / ".pipeline/dev/manifest.json").read_text())
    # Built nothing: every image of the tag pipeline's build job (dev) and of release-prod is the branch's, found
    # by its input digest in the registry (the engine has none of them): dev's in its own repository, prod's in
    # dev's, taken because dev's kept key (its public half, the one CI variable prod gets of dev) vouches for it.
    assert set(_statuses(prod).values()) == {"reused"} == set(_statuses(dev_again).values()), (
        _statuses(prod), _statuses(dev_again))
    assert re.search(r"building \d+ image\(s\)", out) is None, out[-4000:]
    assert {rec["build"]["image_id"] for rec in prod["services"].values()} == ids
    assert dev_key_text.splitlines()[1] not in out
    for name, rec in prod["services"].items():
        branch_push = manifest["services"][name]["push"]
        dev_ref = f"{branch_push['repository']}@{branch_push['digest']}"
        assert dev_again["services"][name]["build"]["reuse"]["registry_image"] == dev_ref, dev_again["services"][name]
        reuse = rec["build"]["reuse"]
        assert reuse["from_environment"] == "dev" and reuse["registry_image"] == dev_ref, (name, rec["build"])
        assert rec["build"]["reason"].startswith(f"reused from dev's {dev_ref}, signed and attested by dev's keys"), (
            name, rec["build"]["reason"])
        # copied by digest into prod's own repository, then signed there with prod's key
        assert rec["push"]["digest"] == branch_push["digest"], (name, rec["push"])
        assert rec["push"]["repository"].startswith(f"{tls_registry.address}/veza/"), rec["push"]
    for stage in ("push", "sign", "verify-images", "deploy", "verify"):
        assert prod["stages"][stage]["status"] == "ok", (stage, prod["stages"][stage])
    status_matches(clone, "prod", extra_env={"VEZA_PORT_FORWARD_PORTS": PORT_FORWARDS,
                                             "VEZA_PROD_KUBECONFIG": str(prod_kc),
                                             **registry_env(tls_registry, "prod")},
                   drop_env=("KUBECONFIG",))
    _pulled_from(local_cluster, PROD_NAMESPACE, f"{tls_registry.address}/veza/", prod)
    print(f"ci-local tag pipeline: {took:.0f}s")


def test_tag_pipeline_without_signing_variables_stops_at_once_naming_them(tmp_path: Path) -> None:
    clone = clone_repo(tmp_path)
    tag = tag_release(clone)
    run = invoke(clone, "ci-local", "--pipeline", "tag",
                 drop_env=("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG"),
                 extra_env={"VEZA_PROD_SIGNING_PASSPHRASE": ""}, timeout=120)
    out = flat(run.stdout + run.stderr)
    assert run.returncode == 2, out
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for name in ("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG"):
        assert name in out, (name, out)
    assert tag.startswith("v") and not (clone / ".gitlab-ci-local").exists()   # no job ran
