"""SBOMs: written per image by the scan stage, then attached to the pushed image in a real registry as an
OCI artifact (subject = the image manifest; tag sha256-<hex>.sbom)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.contract.context import RunContext
from pipeline.core.reporter import PlainReporter
from pipeline.local.registry import LocalRegistry
from pipeline.stages.attach_sbom import SbomStage
from pipeline.stages.sbom import SBOM_MEDIA_TYPE, attach_sboms, sbom_tag
from pipeline.tools.registry_api import RegistryClient, split_repository
from tests.integration.registry_fixtures import run_push
from tests.integration.scan_fixtures import DbMirror, ImageFactory, built_manifest, debian_files, run_scan, scan_config
from tests.unit.test_runner import info

pytestmark = [pytest.mark.engine, pytest.mark.registry]


def test_sbom_attached_to_the_pushed_image(tmp_path: Path, db_mirror: DbMirror, scan_registry: LocalRegistry,
                                           scan_image_factory: ImageFactory) -> None:
    ref, image_id = scan_image_factory("sbom", debian_files("5.2.15-3", "bash"))
    cfg = scan_config(tmp_path, db_repository=db_mirror.repository, threshold="HIGH",
                      registry=scan_registry.address)
    man = built_manifest(tmp_path, {"svc-a": (ref, image_id)})
    scanned = run_scan(None, "test", config=cfg, manifest=man, cache_dir=db_mirror.cache_dir)["svc-a"]
    assert scanned["status"] == "pass"
    pushed = run_push(None, "test", config=cfg, manifest=man)["svc-a"]
    assert pushed["status"] == "pushed"

    refs = attach_sboms(cfg, man, PlainReporter(sink=lambda _l: None))
    repository = pushed["repository"]
    assert refs == {"svc-a": f"{repository}:{sbom_tag(pushed['digest'])}"}
    address, repo = split_repository(repository)
    client = RegistryClient(address)
    got = client.get_manifest(repo, sbom_tag(pushed["digest"]))
    assert got is not None
    body = json.loads(got[1])
    assert body["artifactType"] == SBOM_MEDIA_TYPE
    assert body["subject"]["digest"] == pushed["digest"]
    layer = body["layers"][0]
    _, _, blob = client.request("GET", f"/v2/{repo}/blobs/{layer['digest']}")
    assert blob == Path(scanned["sbom"]).read_bytes()
    assert json.loads(blob)["bomFormat"] == "CycloneDX"
    rec = man.stage_result("svc-a", "sbom")
    assert rec is not None and rec["ref"] == refs["svc-a"] and rec["status"] == "attached"
    # attaching again is idempotent (same tag, blobs already there)
    assert attach_sboms(cfg, man, PlainReporter(sink=lambda _l: None)) == refs

    # The sbom stage (attached to push) resumes only when the registry still serves each recorded SBOM.
    ctx = RunContext(cfg=cfg, env=cfg.env("test"), info=info(), manifest=man, run_id="t", run_dir=tmp_path,
                     reporter=PlainReporter(sink=lambda _l: None), services=["svc-a"])
    assert SbomStage().holds(ctx) is None
    gone = f"{repository}:sha256-{'0' * 64}.sbom"   # a record naming an attachment the registry does not have
    man.record("svc-a", "sbom", {**rec, "ref": gone})
    assert SbomStage().holds(ctx) == f"registry no longer has the SBOM {gone}; attaching again"
    man.record("svc-a", "sbom", {**rec, "subject": "sha256:" + "0" * 64})   # recorded for another digest
    assert SbomStage().holds(ctx) == "svc-a has no SBOM attached to its pushed image; attaching"
