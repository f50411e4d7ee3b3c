"""Pure deploy logic: Helm 3/4 flags, image choice from the manifest, deploy hash, pending recovery, the rollback
target, and the comparison behind `invoke status` and the resume check."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest, Pushed
from pipeline.core.vocab import PushStatus
from pipeline.stages.deploy.drift import (
    drift_report,
    pushed_images,
    recorded_deploy,
    release_difference,
    workload_differences,
)
from pipeline.stages.deploy.recovery import last_good_revision, pending_recovery, recovery_command
from pipeline.stages.deploy.status import Observation
from pipeline.stages.deploy.values import (
    ImageChoice,
    choose_images,
    deep_merge,
    deploy_hash,
    image_values,
    resource_name,
)
from pipeline.tools.helm import ReleaseStatus, Revision, ownership_flags, upgrade_flags

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cfg():  # type: ignore[no-untyped-def]
    return load_config(ROOT / "pipeline.toml", check_files=False)


def test_helm3_flags_are_wait_and_atomic() -> None:
    assert upgrade_flags(3, wait=True, rollback_on_failure=True) == ["--wait", "--atomic"]
    assert upgrade_flags(3, wait=True, rollback_on_failure=False) == ["--wait"]


def test_helm4_flags_are_watcher_and_rollback_on_failure() -> None:
    assert upgrade_flags(4, wait=True, rollback_on_failure=True) == ["--wait=watcher", "--rollback-on-failure"]
    assert "--atomic" not in upgrade_flags(4, wait=True, rollback_on_failure=True)
    assert upgrade_flags(4, wait=False, rollback_on_failure=False) == []


def test_helm4_takes_back_fields_changed_out_of_band() -> None:
    assert ownership_flags(4) == ["--force-conflicts"]  # server-side apply: kubectl set image owns .image
    assert ownership_flags(3) == []  # three-way merge restores them by itself


def test_resource_name_matches_the_chart_helper() -> None:
    assert resource_name("veza", "veza-backend-api") == "veza-backend-api"
    assert resource_name("t", "veza-chat-server") == "t-veza-chat-server"  # "t" is in "chat": prefix rule
    assert resource_name("veza", "veza") == "veza"
    assert len(resource_name("x" * 60, "veza-stream-server")) == 63


def _manifest(status: PushStatus = PushStatus.PUSHED, **digests: str) -> dict[str, Pushed]:
    return {name: Pushed(status, f"127.0.0.1:5000/veza-dev/{name}", d, ("sha-1",)) for name, d in digests.items()}


def test_all_services_from_the_manifest(cfg) -> None:  # type: ignore[no-untyped-def]
    m = _manifest(**{s.name: D1 for s in cfg.services})
    choices, notes = choose_images(cfg, m, [], None)
    assert set(choices) == {s.name for s in cfg.services} and notes == []
    assert choices["veza-docs"].ref == f"127.0.0.1:5000/veza-dev/veza-docs@{D1}"


def test_selected_service_without_digest_is_a_usage_error(cfg) -> None:  # type: ignore[no-untyped-def]
    m = _manifest(**{"veza-docs": D1})
    with pytest.raises(UsageError, match="veza-chat-server.*no pushed digest"):
        choose_images(cfg, m, ["veza-chat-server"], None)


def test_failed_push_is_not_deployed(cfg) -> None:  # type: ignore[no-untyped-def]
    m = _manifest(PushStatus.FAILED, **{"veza-docs": D1})
    with pytest.raises(UsageError):
        choose_images(cfg, m, ["veza-docs"], None)


def test_unselected_services_keep_the_deployed_digest(cfg) -> None:  # type: ignore[no-untyped-def]
    m = _manifest(**{s.name: D2 for s in cfg.services})
    deployed = {"services": {"veza-chat-server": {"enabled": True, "image": {
        "repository": "127.0.0.1:5000/veza-dev/veza-chat-server", "digest": D1}}}}
    choices, _ = choose_images(cfg, m, ["veza-docs"], deployed)
    assert choices["veza-docs"].digest == D2 and choices["veza-docs"].source == "manifest"
    assert choices["veza-chat-server"].digest == D1 and choices["veza-chat-server"].source == "deployed"
    assert "veza-backend-api" not in choices  # neither selected nor deployed


def test_missing_services_are_disabled_in_the_values(cfg) -> None:  # type: ignore[no-untyped-def]
    m = _manifest(**{"veza-docs": D1})
    choices, notes = choose_images(cfg, m, [], None)
    assert list(choices) == ["veza-docs"] and len(notes) == 3
    values = image_values(cfg, choices, "sha256:x")
    assert values["services"]["veza-docs"] == {"enabled": True, "image": {
        "repository": "127.0.0.1:5000/veza-dev/veza-docs", "digest": D1, "tag": ""}}
    assert values["services"]["veza-backend-api"] == {"enabled": False}
    assert values["global"]["deployHash"] == "sha256:x"


def test_deploy_hash_tracks_digests_values_and_chart(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "templates" / "a.yaml").write_text("a: 1\n")
    (chart / "ci").mkdir()
    (chart / "ci" / "x.yaml").write_text("ignored\n")
    vals = tmp_path / "values-local.yaml"
    vals.write_text("replicas: 1\n")
    c1 = {"svc": ImageChoice("svc", "r/svc", D1, "manifest")}
    c2 = {"svc": ImageChoice("svc", "r/svc", D2, "manifest")}
    h = deploy_hash(chart, [vals], c1)
    assert h == deploy_hash(chart, [vals], c1)
    assert h != deploy_hash(chart, [vals], c2)
    (chart / "ci" / "x.yaml").write_text("changed, still ignored\n")
    assert h == deploy_hash(chart, [vals], c1)
    vals.write_text("replicas: 2\n")
    h2 = deploy_hash(chart, [vals], c1)
    assert h2 != h
    (chart / "templates" / "a.yaml").write_text("a: 2\n")
    assert deploy_hash(chart, [vals], c1) != h2


def _rev(n: int, status: str) -> Revision:
    return Revision(n, status, "", "veza-0.1.0", "0.1.0", "")


def test_pending_upgrade_rolls_back_to_last_good_revision() -> None:
    hist = [_rev(1, "superseded"), _rev(2, "deployed"), _rev(3, "pending-upgrade")]
    assert pending_recovery("veza", "ns", "pending-upgrade", hist) == ("rollback", 2)
    hist = [_rev(1, "superseded"), _rev(2, "failed"), _rev(3, "pending-upgrade")]
    assert pending_recovery("veza", "ns", "pending-upgrade", hist) == ("rollback", 1)
    assert recovery_command("veza", "ns", "rollback", 1) == "helm rollback veza 1 --namespace ns --wait"


def test_pending_first_install_is_uninstalled() -> None:
    assert pending_recovery("veza", "ns", "pending-install", [_rev(1, "pending-install")]) == ("uninstall", 0)
    assert recovery_command("veza", "ns", "uninstall", 0) == "helm uninstall veza --namespace ns --wait"


def test_deep_merge_like_helm() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    over = {"a": {"c": [3]}, "e": {"f": 1}}
    assert deep_merge(base, over) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": {"f": 1}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# ---------------------------------------------------------------- recovery never destroys what serves

def test_rollback_target_is_the_last_revision_that_served_whatever_the_latest_status() -> None:
    # issue 15: "3 deployed, 4 failed" is not a first install
    hist = [_rev(1, "superseded"), _rev(2, "superseded"), _rev(3, "deployed"), _rev(4, "failed")]
    assert last_good_revision(hist) == 3
    # the revision that just failed verification is itself "deployed" for Helm: excluded with before=
    hist5 = [*hist, _rev(5, "deployed")]
    assert last_good_revision(hist5, before=5) == 3
    assert last_good_revision([_rev(1, "superseded"), _rev(2, "failed"), _rev(3, "pending-upgrade")]) == 1


def test_only_a_release_that_never_served_has_no_rollback_target() -> None:
    assert last_good_revision([]) == 0
    assert last_good_revision([_rev(1, "failed")]) == 0
    assert last_good_revision([_rev(1, "deployed")], before=1) == 0
    assert last_good_revision([_rev(1, "failed"), _rev(2, "superseded"), _rev(3, "failed")], before=4) == 2


# ---------------------------------------------------------------- status and resume: the pure comparison

REPO = "127.0.0.1:5000/veza-dev/veza-docs"


def _deployment(name: str, image: str, *, replicas: int = 1, ready: int = 1, updated: int | None = None,
                generation: int = 1, observed: int = 1) -> dict[str, object]:
    return {"metadata": {"name": name, "generation": generation},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
            "status": {"readyReplicas": ready, "updatedReplicas": ready if updated is None else updated,
                       "observedGeneration": observed}}


def test_exact_digests_ready_are_no_difference() -> None:
    deps = {"veza-docs": _deployment("veza-docs", f"{REPO}@{D1}")}
    assert workload_differences("veza", {"veza-docs": f"{REPO}@{D1}"}, deps) == []


def test_set_image_to_another_digest_names_the_service_and_both_digests() -> None:
    deps = {"veza-docs": _deployment("veza-docs", f"{REPO}@{D2}")}
    [d] = workload_differences("veza", {"veza-docs": f"{REPO}@{D1}"}, deps)
    assert (d.subject, d.expected, d.observed) == ("veza-docs", D1, f"running {D2}")
    assert d.line() == f"veza-docs: expected {D1}, running {D2}"


def test_another_repository_is_shown_in_full() -> None:
    deps = {"veza-docs": _deployment("veza-docs", f"evil.example/docs@{D1}")}
    [d] = workload_differences("veza", {"veza-docs": f"{REPO}@{D1}"}, deps)
    assert d.expected == f"{REPO}@{D1}" and d.observed == f"running evil.example/docs@{D1}"


def test_scaled_to_zero_deleted_and_not_ready_are_differences() -> None:
    expected = {"veza-docs": f"{REPO}@{D1}", "veza-backend-api": f"{REPO}@{D1}",
                "veza-chat-server": f"{REPO}@{D1}", "veza-stream-server": f"{REPO}@{D1}"}
    deps = {"veza-docs": _deployment("veza-docs", f"{REPO}@{D1}", replicas=0, ready=0),
            "veza-chat-server": _deployment("veza-chat-server", f"{REPO}@{D1}", replicas=2, ready=1),
            "veza-stream-server": _deployment("veza-stream-server", f"{REPO}@{D1}", generation=2, observed=1)}
    diffs = {d.subject: d.observed for d in workload_differences("veza", expected, deps)}
    assert diffs == {"veza-docs": "scaled to 0 replicas",
                     "veza-backend-api": "Deployment veza-backend-api does not exist",
                     "veza-chat-server": "running it with 1/2 replicas Ready (1 updated)",
                     "veza-stream-server": "running it with 1/1 replicas Ready (1 updated)"}


def test_deployment_names_follow_the_chart_for_another_release() -> None:
    deps = {"t-veza-docs": _deployment("t-veza-docs", f"{REPO}@{D1}")}
    assert workload_differences("t", {"veza-docs": f"{REPO}@{D1}"}, deps) == []
    assert len(workload_differences("veza", {"veza-docs": f"{REPO}@{D1}"}, deps)) == 1


def _status(revision: int, status: str) -> ReleaseStatus:
    return ReleaseStatus("veza", "ns", revision, status, "", "")


def test_release_must_be_deployed_at_the_recorded_revision() -> None:
    assert release_difference("veza", _status(4, "deployed"), 4) is None
    assert release_difference("veza", _status(4, "deployed"), None) is None
    rolled = release_difference("veza", _status(5, "deployed"), 4)
    assert rolled is not None
    assert rolled.line() == "release veza: expected deployed at revision 4, deployed at revision 5"
    failed = release_difference("veza", _status(4, "failed"), None)
    assert failed is not None and failed.observed == "failed at revision 4"
    missing = release_difference("veza", None, 3)
    assert missing is not None and missing.observed == "not installed"


def test_recorded_deploy_and_pushed_images_read_the_manifest(tmp_path: Path) -> None:
    m = Manifest.new(tmp_path / "m.json", env="local", release_id="r", version={})
    m.set_service("veza-docs", repository=REPO)
    m.record("veza-docs", "push", {"status": "pushed", "digest": D2})
    m.set_service("veza-chat-server", repository="r/chat")
    m.record("veza-chat-server", "push", {"status": "failed", "digest": D1})
    assert recorded_deploy(m) == (0, {})
    assert pushed_images(m) == {"veza-docs": f"{REPO}@{D2}"}
    m.record("veza-docs", "deploy", {"status": "deployed", "revision": 3, "image": f"{REPO}@{D1}"})
    m.record("veza-chat-server", "deploy", {"status": "noop", "revision": 4, "image": f"r/chat@{D1}"})
    assert recorded_deploy(m) == (4, {"veza-docs": f"{REPO}@{D1}", "veza-chat-server": f"r/chat@{D1}"})
    m.record("veza-chat-server", "deploy", {"status": "rolled_back", "revision": 5, "image": f"r/chat@{D2}"})
    assert recorded_deploy(m) == (3, {"veza-docs": f"{REPO}@{D1}"})


def test_status_compares_an_observation_with_the_environments_manifest(tmp_path: Path, cfg) -> None:  # type: ignore[no-untyped-def]
    env = cfg.env("local")
    m = Manifest.new(tmp_path / "m.json", env="local", release_id="r", version={})
    m.set_service("veza-docs", repository=REPO)
    m.record("veza-docs", "push", {"status": "pushed", "digest": D1})
    fine = Observation(True, _status(2, "deployed"), {"veza-docs": _deployment("veza-docs", f"{REPO}@{D1}")})
    assert drift_report(env, m, fine) == []
    assert [d.line() for d in drift_report(env, m, Observation(False, None, {}))] == [
        "cluster: expected a Kubernetes API that answers, not running"]
    assert [d.line() for d in drift_report(env, None, fine)] == [
        "local: expected a Release manifest for this environment, none found"]
    assert [d.subject for d in drift_report(env, None, Observation(False, None, {}))] == ["local", "cluster"]
    assert [d.line() for d in drift_report(cfg.env("dev"), m, fine)] == [
        "dev: expected a Release manifest for this environment, the manifest is for 'local'"]
    failed = Observation(True, _status(3, "failed"), {})
    assert [d.line() for d in drift_report(env, m, failed)] == [
        "release veza: expected deployed, failed at revision 3",
        "veza-docs: expected " + D1 + ", Deployment veza-docs does not exist"]


# -- what the trust check in front of an apply judges (pipeline/stages/deploy/trust_gate.py)

def test_each_rendered_image_is_named_by_its_source() -> None:
    from pipeline.stages.deploy.trust_gate import image_sources
    from pipeline.stages.deploy.values import ImageChoice

    d = "sha256:" + "a" * 64
    choices = {"api": ImageChoice("api", "r/api", d, "manifest"), "docs": ImageChoice("docs", "r/docs", d, "deployed")}
    assert image_sources(["r/api@" + d, "r/docs@" + d, "r/sidecar@" + d], choices, 7) == {
        "r/api@" + d: "api, Release manifest", "r/docs@" + d: "docs, kept from revision 7",
        "r/sidecar@" + d: "rendered chart"}


def test_an_applied_image_is_judged_by_its_release_or_as_an_earlier_one(tmp_path: Path) -> None:
    """The release's own digest: provenance of the release's commit; any other digest (kept, a rollback's target),
    also of a repository the manifest records: provenance of any commit; a tag or a short digest: refused."""
    from pipeline.stages.verify_images import applied_problems

    d, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    m = Manifest.new(tmp_path / "m.json", env="dev", release_id="r", version={"sha": "c" * 40})
    m.set_service("api", repository="reg/api", tags=["t"], input_digest="sha256:x")
    m.record("api", "push", {"status": "pushed", "digest": d, "tags_pushed": ["t"]})
    m.record("infra/postgres", "push", {"status": "pushed", "digest": other, "repository": "reg/infra/postgres"})
    assert applied_problems("reg/api@" + d, m) == ("", "c" * 40)
    assert applied_problems("reg/infra/postgres@" + other, m) == ("", "c" * 40)
    assert applied_problems("reg/api@" + other, m) == ("", None)
    assert applied_problems("reg/web@" + d, m) == ("", None)
    assert applied_problems("reg/api@" + d, None) == ("", None)
    assert applied_problems("reg/api@" + d, m, earlier=True) == ("", None)   # kept from the serving revision
    assert applied_problems("reg/api:t", m)[0] == "not pinned by digest (reg/api:t)"
    assert applied_problems("reg/api@sha256:abc", m)[0].startswith("not pinned by digest")
