"""Issue 22 end to end: a release with `platforms = ["linux/amd64", "linux/arm64"]` on the pipeline's own cluster.

From a fresh clone whose `local` environment asks for both platforms (own namespace veza-e2e-mp): every service
is cross-compiled for both, pushed as an OCI image index, signed and attested per child, and deployed pinned to
the index digest; the kubelet picks the amd64 child; `invoke status` matches the manifest; a second release is a
no-op checked against the world. Port-forwards 127.0.0.1:19750-19799; the release is removed afterwards.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.release_support import KUBECTL, clone_repo, flat, invoke, manifest, remove_release, status_matches

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "veza-e2e-mp"
PLATFORMS = {"linux/amd64", "linux/arm64"}
INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def mp_clone(tmp_path: Path, local_cluster: Path) -> Iterator[Path]:
    clone = clone_repo(tmp_path)
    toml = clone / "pipeline.toml"
    text = toml.read_text()
    start = text.index("[environments.local]")
    end = text.index("\n[", start + 1)
    table = text[start:end].replace('namespace = "veza-local"', f'namespace = "{NAMESPACE}"')
    assert NAMESPACE in table
    toml.write_text(text[:start] + table.rstrip("\n") + '\nplatforms = ["linux/amd64", "linux/arm64"]\n\n'
                    + text[end:].lstrip("\n"))
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "chore: both platforms on local"], check=True,
                   timeout=60)
    remove_release(local_cluster, NAMESPACE)
    try:
        yield clone
    finally:
        remove_release(local_cluster, NAMESPACE)


def _skopeo_raw(ref: str, *extra: str) -> dict[str, object]:
    res = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_a_two_platform_release_deploys_the_index_digest(mp_clone: Path, local_cluster: Path) -> None:
    run = invoke(mp_clone, "release", "--env", "local", "--yes")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    m = manifest(mp_clone, "local")
    for name, svc in m["services"].items():
        push = svc["push"]
        assert push["media_type"] == INDEX and set(push["children"]) == PLATFORMS, (name, push)
        repo = svc["repository"]
        # The registry serves an index under the tag, whose children are the recorded ones, each for its platform.
        index = _skopeo_raw(f"{repo}:{svc['tags'][0]}")
        assert index["mediaType"] == INDEX, index
        children = {f"{c['platform']['os']}/{c['platform']['architecture']}": c["digest"]  # type: ignore[index]
                    for c in index["manifests"]}  # type: ignore[attr-defined]
        assert children == push["children"], (name, children)
        for platform, digest in children.items():
            config = _skopeo_raw(f"{repo}@{digest}", "--config")
            assert f"{config['os']}/{config['architecture']}" == platform, (name, platform, config)
        # The workload is pinned to the index digest (the kubelet resolves the amd64 child).
        image = subprocess.run([str(KUBECTL), "--kubeconfig", str(local_cluster), "-n", NAMESPACE, "get",
                                "deployment", name, "-o", "jsonpath={.spec.template.spec.containers[0].image}"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
        assert image == f"{repo}@{push['digest']}", (name, image)
        # Each child signed, attested and with an SBOM, by its own digest (cosign's tag layout), in the registry.
        for kind in ("signature", "provenance", "sbom"):
            refs = svc[kind]["children"]
            assert set(refs) == PLATFORMS, (name, kind, refs)
            for platform, ref in refs.items():
                assert children[platform].replace(":", "-") in ref, (name, kind, ref)
                assert _skopeo_raw(ref)["schemaVersion"] == 2
    status_matches(mp_clone, "local")

    again = invoke(mp_clone, "release", "--env", "local", "--yes")
    assert again.returncode == 0, again.stdout[-8000:] + again.stderr[-3000:]
    assert "nothing to redo" in flat(again.stdout), again.stdout[-4000:]
