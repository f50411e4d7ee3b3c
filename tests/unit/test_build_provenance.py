"""Provenance of the build: the build record keeps the build's facts (commit, run, times, builder, materials), a
reused image keeps its original build's facts (read from the image's labels) and adds the reuse, and the SLSA v1
statement says so (the build in buildDefinition / runDetails.metadata, the reuse as a byproduct)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.config import Config, load_config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import LABEL_BUILD, LABEL_INPUT_DIGEST, BuildStatus, carries_build_stamp
from pipeline.stages import build as build_stage
from pipeline.stages.plan import BuildPlan, InputRecord, ServicePlan
from pipeline.stages.sign import build_facts
from pipeline.tools.buildkit import Builder
from pipeline.trust.provenance import check_envelope, provenance_statement, sign_statement
from pipeline.versioning.releaseinfo import ReleaseInfo

A = "a" * 40          # the commit the image was built at
B = "b" * 40          # a later commit with the same service inputs
IMAGE = "sha256:" + "1" * 64
DIGEST = "sha256:" + "2" * 64
BASE = "sha256:" + "3" * 64
INPUT = "sha256:" + "4" * 64
BUILDER = Builder("buildkit", "/usr/bin/docker", "26.1.5", "configured")


def _cfg(root: Path) -> Config:
    (root / "ctx").mkdir(parents=True)
    (root / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    (root / "pipeline.toml").write_text("\n".join([
        "[project]", 'name = "veza"', 'state_dir = ".pipeline"', 'source_url = "https://example.test/veza"', "",
        "[registry]", 'address = "127.0.0.1:5000"', 'namespace = "veza"', "",
        "[[services]]", 'name = "veza-docs"', 'context = "ctx"', 'dockerfile = "ctx/Dockerfile"', "port = 8083", "",
        "[environments.dev]", 'registry = "127.0.0.1:5000"', 'namespace = "veza-dev"',
        'values_file = "helm/veza/values-dev.yaml"', 'stages = ["build", "push", "sign"]', 'tags = ["sha"]', ""]))
    return load_config(root / "pipeline.toml", check_files=False)


def _manifest(tmp: Path, commit: str) -> Manifest:
    return Manifest.new(tmp / f"m-{commit[:4]}.json", env="dev", release_id=f"dev-{commit[:7]}",
                        version={"sha": commit, "short_sha": commit[:7], "version": "1.0.0"})


def _info(commit: str) -> ReleaseInfo:
    return ReleaseInfo(version={"sha": commit}, tags=("sha-" + commit[:7],), revision=commit, version_label="1.0.0",
                       created="2026-12-01T00:00:00Z", release_key=commit[:7])


def _plan(cfg: Config, action: str) -> ServicePlan:
    inputs = InputRecord(INPUT, "5" * 64, {"payload": "644:" + "6" * 64}, {}, {"veza-local/debian:bookworm": BASE})
    return ServicePlan(cfg.service("veza-docs"), "127.0.0.1:5000/veza-dev/veza-docs", ("sha-x",), INPUT, {},
                       action, "same input digest" if action == "reuse" else "", IMAGE if action == "reuse" else None,
                       "", inputs, {"veza-local/debian:bookworm": BASE})


def _statement(cfg: Config, man: Manifest, run_id: str) -> dict[str, Any]:   # run_id: the signing run's
    return provenance_statement(build_facts(cfg, man, "veza-docs", "127.0.0.1:5000/veza-dev/veza-docs", DIGEST))


def test_a_built_record_attests_its_own_build(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    man = _manifest(tmp_path, A)
    origin = {"commit": A, "dirty": "true", "run_id": "run-A", "started_on": "2026-12-01T10:00:00Z",
              "finished_on": "2026-12-01T10:01:30Z", "builder": "buildkit", "builder_version": "26.1.5",
              "engine_version": "26.1.5+dfsg1"}
    build_stage._record(man, _plan(cfg, "build"),
                        build_stage.BuildResult("veza-docs", BuildStatus.BUILT, IMAGE, 90.0, None, origin=origin))
    built = Manifest.load(man.path).built("veza-docs")
    assert built is not None and built.origin is not None and built.reuse is None
    assert (built.origin.commit, built.origin.run_id, built.origin.builder) == (A, "run-A", "buildkit")
    assert built.dockerfile_digest == "sha256:" + "5" * 64 and built.context_digest.startswith("sha256:")

    st = _statement(cfg, man, run_id="sign-run")   # signed by a later run: the build's facts still win
    pred = st["predicate"]
    bd, rd = pred["buildDefinition"], pred["runDetails"]
    assert rd["metadata"] == {"invocationId": "run-A", "startedOn": "2026-12-01T10:00:00Z",
                              "finishedOn": "2026-12-01T10:01:30Z"}
    assert rd["builder"]["version"] == {"builder": "buildkit", "docker-cli": "26.1.5", "docker-engine": "26.1.5+dfsg1"}
    assert "byproducts" not in rd
    assert bd["externalParameters"]["revision"] == A and bd["internalParameters"] == {"inputDigest": INPUT,
                                                                                       "commit": A}
    deps = {d.get("name", "source"): d for d in bd["resolvedDependencies"]}
    assert deps["source"]["digest"] == {"gitCommit": A}
    assert deps["source"]["annotations"] == {"treeState": "dirty"}   # A's tree, not the signing run's
    assert deps["Dockerfile"]["digest"] == {"sha256": "5" * 64}
    assert deps["build-context"]["digest"] == {"sha256": built.context_digest.removeprefix("sha256:")}
    assert deps["base-image"] == {"uri": "docker-image://veza-local/debian:bookworm", "name": "base-image",
                                  "digest": {"sha256": "3" * 64}}


def test_a_reused_image_keeps_its_original_build_and_adds_the_reuse(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit B reuses the image built at A on a fresh runner (no earlier manifest): the facts come from the
    image's labels, as the engine's inspect gives them."""
    cfg = _cfg(tmp_path)
    stamp = build_stage.build_stamp(_info(A), "run-A", "2026-12-01T10:00:00Z", BUILDER, "26.1.5+dfsg1")
    labels = build_stage._labels(cfg, _plan(cfg, "build"), _info(A), stamp)
    assert labels[LABEL_INPUT_DIGEST] == INPUT
    inspect = {"Id": IMAGE, "Created": "2026-12-01T10:01:30.123456789Z", "Config": {"Labels": labels}}
    monkeypatch.setattr(build_stage.docker, "inspect", lambda ref: inspect if ref == IMAGE else None)
    monkeypatch.setattr(build_stage.docker, "tag_image", lambda *_a: None)
    man = _manifest(tmp_path, B)
    plan = BuildPlan(env=cfg.env("dev"), services=(_plan(cfg, "reuse"),), version={}, builder=BUILDER)
    (r,) = build_stage.execute_plan(cfg, plan, _info(B), man, PlainReporter(sink=lambda _l: None), workers=1,
                                    fail_fast=True, no_cache=False, log_dir=tmp_path / "logs", run_id="run-B")
    assert r.status == BuildStatus.REUSED
    built = man.built("veza-docs")
    assert built is not None and built.origin is not None and built.reuse is not None
    assert (built.origin.commit, built.origin.run_id, built.origin.finished_on) == (A, "run-A", "2026-12-01T10:01:30Z")
    assert (built.reuse.run_id, built.reuse.commit) == ("run-B", B)

    st = _statement(cfg, man, run_id="run-B")
    bd, rd = st["predicate"]["buildDefinition"], st["predicate"]["runDetails"]
    assert [d["digest"] for d in bd["resolvedDependencies"] if "gitCommit" in d["digest"]] == [{"gitCommit": A}]
    assert bd["externalParameters"]["revision"] == A and bd["internalParameters"]["commit"] == A
    assert rd["metadata"] == {"invocationId": "run-A", "startedOn": "2026-12-01T10:00:00Z",
                              "finishedOn": "2026-12-01T10:01:30Z"}
    (reuse,) = rd["byproducts"]
    assert reuse["name"] == "reuse" and reuse["digest"] == {"gitCommit": B}
    assert reuse["annotations"]["invocationId"] == "run-B" and reuse["annotations"]["reusedOn"] == built.reuse.at

    key = ec.generate_private_key(ec.SECP256R1())
    env = sign_statement(st, key)
    for commit in (A, B):   # the build's release and the reusing release both find it theirs
        assert check_envelope(env, [key.public_key()], digest=DIGEST, commit=commit).ok
    other = check_envelope(env, [key.public_key()], digest=DIGEST, commit="c" * 40)
    assert not other.ok and "is not the release's commit" in other.problem


def test_an_image_without_the_build_label_has_no_origin() -> None:
    assert build_stage.origin_from_image({"Id": IMAGE, "Created": "2026-12-01T10:01:30Z",
                                          "Config": {"Labels": {LABEL_INPUT_DIGEST: INPUT}}}) == {}
    assert build_stage.origin_from_image({"Config": {"Labels": {LABEL_BUILD: "not json"}}}) == {}
    assert build_stage.origin_from_image(None) == {}


def test_the_build_label_is_one_compact_json_object(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    stamp = build_stage.build_stamp(_info(A), "run-A", "2026-12-01T10:00:00Z", BUILDER, "26.1.5+dfsg1")
    label = build_stage._labels(cfg, _plan(cfg, "build"), _info(A), stamp)[LABEL_BUILD]
    assert json.loads(label) == {"commit": A, "dirty": "false", "run": "run-A", "started": "2026-12-01T10:00:00Z",
                                 "builder": "buildkit", "builder_version": "26.1.5", "engine": "26.1.5+dfsg1"}


@pytest.mark.parametrize("origin", [None, {"commit": ""}], ids=["no-origin", "empty-origin"])
def test_a_record_without_its_builds_facts_is_refused_not_attested_to_the_signing_run(
        tmp_path: Path, origin: dict[str, str] | None) -> None:
    """A build record written before the build's facts were kept: the provenance would have to guess them (the
    signing run's commit and time); the signing refuses and names the rebuild."""
    cfg = _cfg(tmp_path)
    man = _manifest(tmp_path, B)
    build_stage._record(man, _plan(cfg, "build"), build_stage.BuildResult("veza-docs", BuildStatus.BUILT, IMAGE, 1.0,
                                                                          None, origin=origin or {}))
    with pytest.raises(UsageError) as exc:
        _statement(cfg, man, run_id="sign-run")
    assert "veza-docs's origin is missing" in exc.value.message
    assert exc.value.hint == "rebuild it: invoke build --service veza-docs (then push and sign)"


@pytest.mark.parametrize(("labels", "carries"), [
    ({LABEL_BUILD: json.dumps({"commit": A, "run": "r"})}, True),
    ({LABEL_INPUT_DIGEST: INPUT}, False),                        # built before the stamp existed
    ({LABEL_BUILD: "not json"}, False), ({LABEL_BUILD: "[1]"}, False), ({LABEL_BUILD: '{"commit": ""}'}, False)])
def test_only_an_image_that_carries_its_builds_facts_is_reusable(labels: dict[str, str], carries: bool) -> None:
    assert carries_build_stamp(labels) is carries
