"""Provenance of the build, for real: the engine builds the service at commit A, a commit B that leaves the
service's inputs alone reuses that image on a fresh runner (A's manifest and input cache gone), and the
provenance the registry serves after signing at B names A as the build commit and B's run as the reuse."""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import BuildStatus
from pipeline.stages.build import execute_plan, make_plan
from pipeline.stages.push import push_images
from pipeline.stages.sign import sign_images
from pipeline.stages.verify_images import check_image
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from pipeline.trust.attach import attachment_tag, read_layers
from pipeline.versioning.releaseinfo import release_info
from tests.integration.reuse_support import commit_all
from tests.integration.trust.trust_fixtures import TrustWorld

pytestmark = [pytest.mark.engine, pytest.mark.registry]
QUIET = PlainReporter(sink=lambda _line: None)




def _release(w: TrustWorld, run_id: str, log_dir: Path) -> tuple[Manifest, BuildStatus, str]:
    """build → push → sign of veza-docs for dev at the worktree's HEAD, as one run `run_id`:
    (manifest, build status, pushed digest)."""
    cfg = w.cfg
    env = cfg.env("dev")
    info = release_info(cfg, env)
    man = Manifest.new(log_dir / "manifest.json", env="dev", release_id=info.release_id("dev"), version=info.version)
    plan = make_plan(cfg, env, cfg.services, info, no_cache=False, provision_bases=False)
    (r,) = execute_plan(cfg, plan, info, man, QUIET, workers=1, fail_fast=True, no_cache=False,
                        log_dir=log_dir / "build", run_id=run_id)
    assert r.status in (BuildStatus.BUILT, BuildStatus.REUSED), r.reason
    push_images(cfg, env, man, QUIET)
    sign_images(cfg, env, man, QUIET)
    pushed = man.pushed("veza-docs")
    assert pushed is not None and pushed.digest
    return man, r.status, pushed.digest


def _provenance(w: TrustWorld, digest: str) -> dict[str, Any]:
    _, repo = split_repository(w.repository())
    (att,) = read_layers(w.client, repo, attachment_tag(digest, "att")) or []
    return dict(json.loads(base64.b64decode(json.loads(att.data)["payload"])))


def test_a_reused_image_is_attested_to_the_commit_it_was_built_at(trust_world: TrustWorld, tmp_path: Path) -> None:
    w = trust_world
    root = w.root
    (root / ".gitignore").write_text(".pipeline/\n")
    (root / "ctx" / "payload").write_text(f"veza-docs {uuid.uuid4().hex}\n")   # inputs no other run has built
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    image_ids: list[str] = []
    try:
        commit_a = commit_all(root, "feat: the docs")
        man_a, status_a, digest_a = _release(w, "run-A", tmp_path / "run-A")
        assert status_a == BuildStatus.BUILT
        built_a = man_a.built("veza-docs")
        assert built_a is not None and built_a.image_id
        image_ids.append(built_a.image_id)

        shutil.rmtree(w.cfg.state_dir, ignore_errors=True)     # a fresh runner: A's input cache is gone too
        (root / "NOTES.md").write_text("outside the service's context\n")
        commit_b = commit_all(root, "docs: notes")
        man_b, status_b, digest_b = _release(w, "run-B", tmp_path / "run-B")
        assert status_b == BuildStatus.REUSED and digest_b == digest_a

        st = _provenance(w, digest_b)
        bd, rd = st["predicate"]["buildDefinition"], st["predicate"]["runDetails"]
        commits = [d["digest"]["gitCommit"] for d in bd["resolvedDependencies"] if "gitCommit" in d["digest"]]
        assert commits == [commit_a]
        assert bd["externalParameters"]["revision"] == commit_a and bd["internalParameters"]["commit"] == commit_a
        assert rd["metadata"]["invocationId"] == "run-A"
        assert rd["metadata"]["startedOn"] <= rd["metadata"]["finishedOn"]
        assert rd["builder"]["version"]["builder"] in ("buildx", "buildkit", "legacy")
        assert rd["builder"]["version"]["docker-engine"]
        (reuse,) = rd["byproducts"]
        assert reuse["name"] == "reuse" and reuse["digest"] == {"gitCommit": commit_b}
        assert reuse["annotations"]["invocationId"] == "run-B"
        names = {d.get("name") for d in bd["resolvedDependencies"]}
        assert {"Dockerfile", "build-context"} <= names

        trusted = envkeys.trusted_keys(w.cfg, w.cfg.env("dev"))
        _, repo = split_repository(w.repository())
        assert check_image(w.client, repo, digest_b, trusted, commit=commit_b) == []   # B's release verifies
        assert check_image(w.client, repo, digest_b, trusted, commit=commit_a) == []   # and so does A's
    finally:   # the image and every tag on it (service tags, cache tag): built by this test alone
        import docker as docker_py

        for image_id in image_ids:
            try:
                docker_py.APIClient().remove_image(image_id, force=True)
            except docker_py.errors.APIError:
                pass
