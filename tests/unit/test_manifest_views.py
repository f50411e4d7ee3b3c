"""The Release manifest's typed views: what a stage writes comes back typed (also after a reload from disk),
a missing record is None, and a recorded status outside its enum is one clear UsageError naming the file, the
service and the field (a writer cannot record one at all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import PolicyBlocked, UsageError
from pipeline.core.manifest import Manifest, Pushed, StageRecord
from pipeline.core.vocab import (
    AttachStatus,
    BuildStatus,
    DeployStatus,
    PromotionStatus,
    PushStatus,
    ScanStatus,
    SignStatus,
    SmokeStatus,
    StageStatus,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")
REPO = "127.0.0.1:5000/veza/api"


def _new(tmp_path: Path) -> Manifest:
    m = Manifest.new(tmp_path / "local" / "manifest.json", env="local", release_id="local-abc1234",
                     version={"sha": "abc1234" + "0" * 33, "short_sha": "abc1234", "version": "1.2.3"})
    m.set_service("api", repository=REPO, tags=["sha-abc1234", "main"], input_digest=D3)
    return m


def _write_all(m: Manifest) -> None:
    m.record("api", "build", {"status": BuildStatus.BUILT, "image_id": D1, "log": "/l/api.log",
                              "build_args": {"GO": "1.19"}, "base_images": {"debian": D2},
                              "platforms": {"linux/arm64": D2}})
    m.record("api", "scan", {"status": ScanStatus.PASS, "image_id": D1, "report": "/r/api.json", "sbom": "/r/api.cdx",
                             "counts": {"HIGH": 0, "CRITICAL": 1}, "threshold": "CRITICAL"})
    m.record_infra("postgres", "scan", {"status": ScanStatus.BLOCKED, "ref": "veza/postgres:15", "image_id": D2})
    m.record("api", "smoke", {"status": SmokeStatus.PASS, "image": D1, "run_id": "run-1", "checks": []})
    m.record("api", "push", {"status": PushStatus.PUSHED, "repository": REPO, "digest": D2, "image_id": D1,
                             "tags_pushed": ["sha-abc1234", "main"], "children": {"linux/arm64": D3}, "retries": 2})
    m.record("api", "sbom", {"status": AttachStatus.ATTACHED, "ref": f"{REPO}:sha256-b.sbom", "digest": D3,
                             "subject": D2})
    m.record("api", "signature", {"status": SignStatus.SIGNED, "ref": f"{REPO}:sha256-b.sig", "subject": D2,
                                  "key": "sha256:k", "vex": f"{REPO}:sha256-b.vex"})
    m.record_promotion("api", "staging", {"status": PromotionStatus.PROMOTED, "digest": D2,
                                          "repository": "reg/staging/api", "source": f"{REPO}@{D2}", "tags": ["1.2.3"]})
    m.record("api", "deploy", {"status": DeployStatus.DEPLOYED, "revision": 3, "image": f"{REPO}@{D2}", "digest": D2})
    m.record_stage("deploy", {"status": StageStatus.OK, "services": ["api"], "run_id": "run-1", "detail": "rev 3",
                              "duration_s": 1.5, "revision": 3})


@pytest.mark.parametrize("reload", [False, True], ids=["in memory", "reloaded from disk"])
def test_every_record_round_trips_through_its_view(tmp_path: Path, reload: bool) -> None:
    m = _new(tmp_path)
    _write_all(m)
    if reload:
        m = Manifest.load(m.path)
    b = m.built("api")
    assert b is not None and b.ok and b.status is BuildStatus.BUILT and b.image_id == D1 and b.log == "/l/api.log"
    assert (b.repository, b.tags, b.input_digest) == (REPO, ("sha-abc1234", "main"), D3)
    assert (dict(b.build_args), dict(b.base_images), dict(b.platform_images)) == (
        {"GO": "1.19"}, {"debian": D2}, {"linux/arm64": D2})
    s = m.scanned("api")
    assert s is not None and s.passed and s.status is ScanStatus.PASS and s.image_id == D1
    assert (s.report, s.sbom, dict(s.counts or {}), s.threshold) == ("/r/api.json", "/r/api.cdx",
                                                                     {"HIGH": 0, "CRITICAL": 1}, "CRITICAL")
    i = m.infra_scanned("postgres")
    assert i is not None and i.status is ScanStatus.BLOCKED and not i.passed and i.ref == "veza/postgres:15"
    assert m.infra_names() == ["postgres"]
    sm = m.smoked("api")
    assert sm is not None and sm.passed and sm.image == D1 and sm.run_id == "run-1"
    p = m.pushed("api")
    assert p is not None and p.ok and p.ref == f"{REPO}@{D2}" and p.tags == ("sha-abc1234", "main")
    assert (dict(p.children), p.image_id, p.retries) == ({"linux/arm64": D3}, D1, 2)
    assert m.pushed_images() == {"api": p}
    sb = m.sbom("api")
    assert sb is not None and sb.status is AttachStatus.ATTACHED and sb.subject == D2 and sb.digest == D3
    sg = m.signed("api")
    assert sg is not None and sg.status is SignStatus.SIGNED and sg.key == "sha256:k"
    assert sg.vex == f"{REPO}:sha256-b.vex"
    pr = m.promotion("api", "staging")
    assert pr is not None and pr.status is PromotionStatus.PROMOTED and pr.digest == D2 and pr.tags == ("1.2.3",)
    d = m.deployed("api")
    assert d is not None and d.serving and d.revision == 3 and d.image == f"{REPO}@{D2}" and d.digest == D2
    st = m.stage("deploy")
    assert st == StageRecord("deploy", StageStatus.OK, ("api",), "run-1", "rev 3", "", 0, 1.5, {"revision": 3})
    assert st.covers(["api"]) and not st.covers(["api", "docs"]) and list(m.stages()) == ["deploy"]
    assert m.commit == "abc1234" + "0" * 33 and m.version_facts()["version"] == "1.2.3"


def test_a_missing_record_is_none(tmp_path: Path) -> None:
    m = _new(tmp_path)   # "api" has its identity only; "ghost" is not in the manifest at all
    for name in ("api", "ghost"):
        assert (m.built(name), m.scanned(name), m.smoked(name), m.pushed(name), m.sbom(name), m.signed(name),
                m.promotion(name, "staging"), m.deployed(name)) == (None,) * 8
    assert m.infra_scanned("postgres") is None and m.stage("build") is None and m.stages() == {}
    assert m.pushed_images() == {} and m.identity("ghost").repository is None
    assert m.identity("api").tags == ("sha-abc1234", "main")


def _recorded(tmp_path: Path, where: list[str], value: Any) -> Manifest:
    """A manifest on disk whose record at `where` (a path of keys) has status `value`, as an older or
    hand-edited file would."""
    m = _new(tmp_path)
    _write_all(m)
    doc = json.loads(m.path.read_text())
    node = doc
    for key in where:
        node = node[key]
    node["status"] = value
    m.path.write_text(json.dumps(doc))
    return Manifest.load(m.path)


@pytest.mark.parametrize(("where", "read"), [
    (["services", "api", "build"], lambda m: m.built("api")),
    (["services", "api", "scan"], lambda m: m.scanned("api")),
    (["services", "api", "smoke"], lambda m: m.smoked("api")),
    (["services", "api", "push"], lambda m: m.pushed("api")),
    (["services", "api", "sbom"], lambda m: m.sbom("api")),
    (["services", "api", "signature"], lambda m: m.signed("api")),
    (["services", "api", "promotions", "staging"], lambda m: m.promotion("api", "staging")),
    (["services", "api", "deploy"], lambda m: m.deployed("api")),
    (["infra", "postgres", "scan"], lambda m: m.infra_scanned("postgres")),
    (["stages", "deploy"], lambda m: m.stage("deploy")),
], ids=lambda v: ".".join(v) if isinstance(v, list) else "")
def test_an_unknown_status_is_one_clear_error_naming_the_service_and_field(tmp_path: Path, where: list[str],
                                                                           read: Any) -> None:
    m = _recorded(tmp_path, where, "passed")
    with pytest.raises(UsageError) as err:
        read(m)
    field = ".".join(where) + ".status"
    assert f"{m.path}: {field} is 'passed', not one of " in err.value.message
    assert "rerun `invoke " in (err.value.hint or "")


def test_a_writer_cannot_record_a_status_outside_the_enum(tmp_path: Path) -> None:
    m = _new(tmp_path)
    with pytest.raises(ValueError, match=r"services\.api\.scan\.status 'passed' is not one of pass, blocked, error"):
        m.record("api", "scan", {"status": "passed"})
    with pytest.raises(ValueError, match=r"promotions\.staging\.status 'done'"):
        m.record_promotion("api", "staging", {"status": "done"})
    with pytest.raises(ValueError, match=r"stages\.build\.status 'fail'"):
        m.record_stage("build", {"status": "fail"})
    assert m.scanned("api") is None and m.stage("build") is None   # nothing was written


def test_a_push_view_is_deployable_only_with_a_sha256_digest_and_a_repository() -> None:
    assert Pushed(PushStatus.SKIPPED, REPO, D1, ()).ok
    assert not Pushed(PushStatus.FAILED, REPO, D1, ()).ok
    assert not Pushed(PushStatus.PUSHED, REPO, "latest", ()).ok
    assert not Pushed(PushStatus.PUSHED, "", D1, ()).ok


def test_promotion_gates_read_the_scan_and_smoke_views(tmp_path: Path) -> None:
    from pipeline.core.config import load_config
    from pipeline.release.promote import _gates

    cfg = load_config(Path(__file__).resolve().parents[2] / "pipeline.toml", check_files=False)
    dst = next(e for e in cfg.environments.values() if set(e.promote_requires) == {"scan", "smoke"})
    m = _new(tmp_path)
    _write_all(m)
    _gates(m, ["api"], dst)   # scan pass (and smoke pass): allowed
    m.record("api", "smoke", {"status": SmokeStatus.FAIL})
    m.record("api", "scan", {"status": ScanStatus.BLOCKED})
    with pytest.raises(PolicyBlocked, match=r"api \((scan: blocked|smoke: fail)\)"):
        _gates(m, ["api"], dst)
    for gate in ("scan", "smoke"):   # a word no stage writes ("passed"): named, not guessed
        old = _recorded(tmp_path, ["services", "api", gate], "passed")
        with pytest.raises(UsageError, match=rf"services\.api\.{gate}\.status is 'passed'"):
            _gates(old, ["api"], dst)


def test_the_json_schema_lists_exactly_the_statuses_of_the_vocabulary() -> None:
    from pipeline.core.manifest import RECORD_STATUS

    root = Path(__file__).resolve().parents[2]
    schema = json.loads((root / "pipeline/core/schemas/manifest.schema.json").read_text())
    service = schema["$defs"]["service"]["properties"]
    for slot, kind in RECORD_STATUS.items():
        assert service[slot]["properties"]["status"]["enum"] == [str(s) for s in kind], slot
    promotions = service["promotions"]["additionalProperties"]["properties"]["status"]["enum"]
    assert promotions == [str(s) for s in PromotionStatus]
    stages = schema["properties"]["stages"]["additionalProperties"]["properties"]["status"]["enum"]
    assert stages == [str(s) for s in StageStatus]
