"""The infra images are images of the release like the services' (pipeline/core/release_images.py): one list of
record subjects that push, sign, verify-images and deploy iterate; the infra documents pin every container by
digest and refuse anything else with one clear line; another component is one [infra.NAME] entry."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.config import Base, Config, Infra, load_config
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.release_images import (
    content_tag,
    infra_images,
    infra_subject,
    pinned_infra,
    release_subjects,
)
from pipeline.local.infra import infra_documents, placeholder_images

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "c" * 40
IMAGE_ID = "sha256:" + "3f2a9c1b7d4e" + "0" * 52
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")   # OCI distribution spec, tag grammar


def _cfg() -> Config:
    return load_config(ROOT / "pipeline.toml", check_files=False)


def _digest(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def _pinned(cfg: Config) -> dict[str, str]:
    return {name: f"127.0.0.1:5000/veza-dev/infra/{name}@{_digest(i + 1)}" for i, name in enumerate(cfg.infra)}


def _containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for d in docs:
        if d["kind"] == "Deployment":
            spec = d["spec"]["template"]["spec"]
            out += [*spec.get("initContainers", []), *spec["containers"]]
    return out


def _manifest(tmp: Path, cfg: Config, pushed: dict[str, str]) -> Manifest:
    m = Manifest.new(tmp / "m.json", env="local", release_id="local-ccccccc",
                     version={"sha": COMMIT, "short_sha": COMMIT[:7], "branch": "main"})
    for name, ref in pushed.items():
        repo, _, digest = ref.partition("@")
        m.record(infra_subject(name), "push", {
            "status": "pushed", "repository": repo, "digest": digest, "tags_pushed": ["15-3f2a9c1b7d4e"],
            "image_id": IMAGE_ID, "source": {"ref": cfg.bases[cfg.infra[name].base].local,
                                             "recipe_digest": "sha256:" + "9" * 64, "created": "2026-12-01T00:00:00Z"}})
    return m


def test_every_infra_container_runs_the_pinned_digest_it_was_given() -> None:
    cfg = _cfg()
    images = _pinned(cfg)
    docs = infra_documents(cfg, "veza-secrets", images, namespace="veza-dev")
    containers = _containers(docs)
    # one container each; the embedded Prometheus's pod discovery runs beside it on the same pinned image
    assert [c["image"] for c in containers] == [*(images[n] for n in cfg.infra), images["prometheus"]]
    assert all(c["imagePullPolicy"] == "IfNotPresent" for c in containers)   # a digest cannot change under it
    assert not any(cfg.bases[i.base].local in yaml.safe_dump_all(docs) for i in cfg.infra.values())


@pytest.mark.parametrize("bad", [
    None,                                                        # no image at all
    "veza-local/postgres:15",                                    # the mutable local tag of before
    "127.0.0.1:5000/veza-dev/infra/postgres:15-3f2a9c1b7d4e",    # a registry tag
    "127.0.0.1:5000/veza-dev/infra/postgres@sha256:abc",         # a truncated digest
    "127.0.0.1:5000/veza-dev/infra/postgres@sha512:" + "a" * 128,   # not sha256
    "127.0.0.1:5000/veza-dev/infra/postgres@sha256:" + "A" * 64,    # not lowercase hex
])
def test_an_infra_image_without_a_digest_is_one_clear_error(bad: str | None) -> None:
    cfg = _cfg()
    images = _pinned(cfg)
    if bad is None:
        del images["redis"]
    else:
        images["redis"] = bad
    with pytest.raises(UsageError) as err:
        infra_documents(cfg, "veza-secrets", images, namespace="veza-dev")
    assert "redis" in err.value.message and "\n" not in err.value.message
    assert err.value.hint


def test_the_release_runs_its_services_and_its_infra_as_one_list() -> None:
    cfg = _cfg()
    local = cfg.env("local")
    services = [s.name for s in cfg.services]
    assert release_subjects(cfg, local) == [*services, "infra/postgres", "infra/redis", "infra/nats",
                                            "infra/prometheus"]   # local: monitoring = "embedded"
    assert release_subjects(cfg, local, ["veza-docs"]) == ["veza-docs"]   # --service leaves the infra alone
    quiet = dataclasses.replace(local, monitoring="none")
    assert release_subjects(cfg, quiet) == [*services, "infra/postgres", "infra/redis", "infra/nats"]
    external = dataclasses.replace(local, local_infra=False)
    assert release_subjects(cfg, external) == services
    repos = {i.name: i.repository for i in infra_images(cfg, local)}
    assert repos == {n: f"127.0.0.1:5000/veza-local/infra/{n}" for n in ("postgres", "redis", "nats", "prometheus")}
    staging = {i.name: i.repository for i in infra_images(cfg, cfg.env("staging"))}
    assert "prometheus" not in staging   # it has not opted in
    assert staging["postgres"] == "127.0.0.1:5000/veza-staging/infra/postgres"   # the environment's namespace


def test_another_infra_component_is_one_config_entry() -> None:
    cfg = _cfg()
    cfg = dataclasses.replace(
        cfg, bases={**cfg.bases, "mailpit": Base("mailpit", "axllent/mailpit:v1", "veza-local/mailpit:1",
                                                 "mailpit")},
        infra={**cfg.infra, "mailpit": Infra("mailpit", "mailpit", 1025)})
    local = cfg.env("local")
    assert release_subjects(cfg, local)[-1] == "infra/mailpit"
    image = infra_images(cfg, local)[-1]
    assert (image.source_ref, image.repository) == ("veza-local/mailpit:1",
                                                    "127.0.0.1:5000/veza-local/infra/mailpit")
    images = {**_pinned(cfg), "mailpit": f"{image.repository}@{_digest(9)}"}
    docs = infra_documents(cfg, "veza-secrets", images, namespace="veza-dev")
    mail = [d for d in docs if d["metadata"]["name"] == "mailpit"]
    assert [d["kind"] for d in mail] == ["Deployment", "Service"]
    assert _containers(mail)[0]["image"] == images["mailpit"]
    assert mail[1]["spec"]["ports"][0]["port"] == 1025
    from pipeline.gate.pod_security import enforce_restricted

    placeholders = placeholder_images(cfg, local)
    assert enforce_restricted(infra_documents(cfg, "veza-secrets", placeholders, namespace="veza-local")) == 5


def test_the_content_tag_names_the_source_and_the_image_and_is_a_valid_tag() -> None:
    assert content_tag("veza-local/postgres:15", IMAGE_ID) == "15-3f2a9c1b7d4e"
    assert content_tag("veza-local/nats:2.9", IMAGE_ID) == "2.9-3f2a9c1b7d4e"
    assert content_tag("127.0.0.1:5000/mirror/redis", IMAGE_ID) == "image-3f2a9c1b7d4e"   # no tag; port is no tag
    assert TAG_RE.match(content_tag("x:" + "v" * 128, IMAGE_ID))
    with pytest.raises(ValueError):
        content_tag("veza-local/postgres:15", "3f2a9c1b7d4e")


def test_the_deploy_takes_the_infra_digests_from_the_manifest_and_names_a_missing_one(tmp_path: Path) -> None:
    cfg = _cfg()
    local = cfg.env("local")
    images = _pinned(cfg)
    assert pinned_infra(cfg, local, _manifest(tmp_path, cfg, images)) == images
    partial = {k: v for k, v in images.items() if k != "nats"}
    with pytest.raises(UsageError) as err:
        pinned_infra(cfg, local, _manifest(tmp_path, cfg, partial))
    assert "infra image nats" in err.value.message and "invoke push --env local" in err.value.hint
    with pytest.raises(UsageError):
        pinned_infra(cfg, local, None)
    assert pinned_infra(cfg, dataclasses.replace(local, local_infra=False), None) == {}


def test_infra_records_live_under_infra_and_read_through_the_same_views(tmp_path: Path) -> None:
    import json

    import jsonschema

    cfg = _cfg()
    m = _manifest(tmp_path, cfg, _pinned(cfg))
    m.record("infra/postgres", "signature", {"status": "signed", "ref": "r", "subject": _digest(1), "key": "k"})
    raw = json.loads((tmp_path / "m.json").read_text())
    assert set(raw["infra"]["postgres"]) == {"push", "signature"} and "infra/postgres" not in raw["services"]
    pushed = Manifest.load(tmp_path / "m.json").pushed("infra/postgres")
    assert pushed is not None and pushed.ok and pushed.image_id == IMAGE_ID
    assert pushed.source["ref"] == "veza-local/postgres:15"
    assert m.infra_names() == ["postgres", "redis", "nats", "prometheus"]
    schema = json.loads((ROOT / "pipeline/core/schemas/manifest.schema.json").read_text())
    jsonschema.validate(raw, schema)


def test_an_infra_record_status_outside_the_vocabulary_is_refused_like_a_service_s(tmp_path: Path) -> None:
    cfg = _cfg()
    m = _manifest(tmp_path, cfg, {})
    with pytest.raises(ValueError):
        m.record("infra/postgres", "push", {"status": "shipped"})


LAYERS = ("sha256:" + "1" * 64, "sha256:" + "2" * 64)   # the built image's rootfs.diff_ids


def _built_labels(cfg: Config, base: str = "postgres") -> dict[str, str]:
    """The labels `invoke bases` gives an image it builds from the current recipe of `base`."""
    from pipeline.local.bases import (
        LABEL_BUILDER,
        LABEL_PACKAGES,
        LABEL_PACKAGES_DIGEST,
        LABEL_PARENT,
        LABEL_RECIPE_DIGEST,
        layers_digest,
        packages_digest,
    )
    from pipeline.stages.infra_provenance import current_recipe_digest

    listed = "libpq5=15.14-0+deb12u1,postgresql-15=15.14-0+deb12u1"
    return {LABEL_RECIPE_DIGEST: current_recipe_digest(cfg, base)[0], LABEL_PACKAGES: listed,
            "veza.pipeline.layers-digest": layers_digest(LAYERS),
            LABEL_PACKAGES_DIGEST: packages_digest(listed), "veza.pipeline.run": "bases-20261201000000",
            LABEL_BUILDER: '{"kind":"legacy","docker_cli":"28.2.2","engine":"20.10.24",'
                           '"started":"2026-12-01T00:00:00Z"}',
            LABEL_PARENT: "veza-local/debian:bookworm@sha256:" + "d" * 64}


def test_infra_provenance_comes_from_the_image_s_build_facts(tmp_path: Path) -> None:
    from pipeline.stages.infra_provenance import ImageConfig, infra_build_facts
    from pipeline.trust.provenance import check_envelope, provenance_statement, sign_statement

    cfg = _cfg()
    images = _pinned(cfg)
    m = _manifest(tmp_path, cfg, images)
    repo, _, digest = images["postgres"].partition("@")
    labels = _built_labels(cfg)
    facts = infra_build_facts(cfg, m, "infra/postgres", repo, digest,
                              ImageConfig(IMAGE_ID, labels, "2026-12-01T00:03:00Z", LAYERS))
    st = provenance_statement(facts)
    assert st["subject"] == [{"name": repo, "digest": {"sha256": digest[7:]}}]
    deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
    named = {d.get("name", "source"): d for d in deps}
    # built from its recipe, not at the release's commit: no gitCommit source; the release is the reuse byproduct
    assert "source" not in named and not [d for d in deps if "gitCommit" in d.get("digest", {})]
    (reuse,) = st["predicate"]["runDetails"]["byproducts"]
    assert reuse["name"] == "reuse" and reuse["digest"] == {"gitCommit": COMMIT}
    assert named["Dockerfile"]["uri"] == "pipeline/local/recipes/postgres/Dockerfile"
    assert len(named["Dockerfile"]["digest"]["sha256"]) == 64
    assert named["base-image"] == {"uri": "docker-image://veza-local/debian:bookworm", "name": "base-image",
                                   "digest": {"sha256": "d" * 64}}
    assert [d["uri"] for d in deps if d.get("name") == "debian-package"] == [
        "pkg:deb/debian/libpq5@15.14-0+deb12u1", "pkg:deb/debian/postgresql-15@15.14-0+deb12u1"]
    assert named["debian-packages"]["digest"]["sha256"] == labels["veza.pipeline.packages-digest"][7:]
    build = st["predicate"]["buildDefinition"]
    assert build["internalParameters"]["inputDigest"] == labels["veza.pipeline.recipe-digest"]
    assert build["buildType"].endswith("/veza-pipeline/infra-image/v1")
    run = st["predicate"]["runDetails"]
    assert build["externalParameters"]["revision"] == ""
    assert run["builder"]["version"] == {"kind": "legacy", "docker_cli": "28.2.2", "engine": "20.10.24"}
    assert run["metadata"] == {"invocationId": "bases-20261201000000", "startedOn": "2026-12-01T00:00:00Z",
                               "finishedOn": "2026-12-01T00:03:00Z"}
    key = ec.generate_private_key(ec.SECP256R1())
    assert check_envelope(sign_statement(st, key), [key.public_key()], digest=digest, commit=COMMIT).ok
    with pytest.raises(UsageError):
        infra_build_facts(cfg, m, "infra/nope", repo, digest, ImageConfig(IMAGE_ID, labels, ""))


@pytest.mark.parametrize("change, says, layers", [
    ({"veza.pipeline.recipe-digest": "sha256:" + "9" * 64}, "was built from recipe sha256:99999999999", LAYERS),
    ({}, "does not have the layers `invoke bases` built", (*LAYERS, "sha256:" + "3" * 64)),   # FROM it + a RUN
    ({"veza.pipeline.layers-digest": ""}, "veza.pipeline.layers-digest missing", LAYERS),
    ({"veza.pipeline.packages": ""}, "has no build facts: veza.pipeline.packages missing", LAYERS),
    ({"veza.pipeline.builder": ""}, "has no build facts: veza.pipeline.builder missing", LAYERS),
    ({"veza.pipeline.packages": "libpq5=15.15"}, "packages-digest (does not match the package list)", LAYERS),
])
def test_an_infra_image_its_labels_cannot_describe_is_refused(tmp_path: Path, change: dict[str, str],
                                                              says: str, layers: tuple[str, ...]) -> None:
    from pipeline.stages.infra_provenance import ImageConfig, infra_build_facts

    cfg = _cfg()
    images = _pinned(cfg)
    m = _manifest(tmp_path, cfg, images)
    repo, _, digest = images["postgres"].partition("@")
    with pytest.raises(UsageError) as err:
        infra_build_facts(cfg, m, "infra/postgres", repo, digest,
                          ImageConfig(IMAGE_ID, {**_built_labels(cfg), **change}, "", layers))
    assert says in err.value.message and err.value.exit_code == 2
    assert "\n" not in err.value.message and "invoke bases" in err.value.hint


def test_another_image_under_the_pushed_digest_is_refused(tmp_path: Path) -> None:
    from pipeline.stages.infra_provenance import ImageConfig, infra_build_facts

    cfg = _cfg()
    images = _pinned(cfg)
    m = _manifest(tmp_path, cfg, images)
    repo, _, digest = images["postgres"].partition("@")
    with pytest.raises(UsageError, match="not the pushed"):
        infra_build_facts(cfg, m, "infra/postgres", repo, digest,
                          ImageConfig(_digest(7), _built_labels(cfg), "", LAYERS))


def test_a_pulled_infra_image_needs_a_pin_and_is_recorded_as_pulled_not_built(tmp_path: Path) -> None:
    from pipeline.stages.infra_provenance import ImageConfig, infra_build_facts
    from pipeline.trust.provenance import provenance_statement

    pin = "sha256:" + "ab" * 32
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, bases={**cfg.bases, "redis": dataclasses.replace(   # by tag, whatever the tree's
        cfg.bases["redis"], upstream="redis:7-alpine")})
    images = _pinned(cfg)
    repo, _, digest = images["redis"].partition("@")
    m = _manifest(tmp_path, cfg, images)
    pulled = ImageConfig(IMAGE_ID, {}, "2026-11-01T00:00:00Z")   # an upstream image: none of our labels
    with pytest.raises(UsageError) as err:          # upstream = "redis:7-alpine": a mutable tag
        infra_build_facts(cfg, m, "infra/redis", repo, digest, pulled)
    assert "'redis:7-alpine' is not pinned by digest" in err.value.message and "@sha256:" in err.value.hint

    pinned_cfg = dataclasses.replace(cfg, bases={**cfg.bases, "redis": dataclasses.replace(
        cfg.bases["redis"], upstream=f"redis:7-alpine@{pin}")})
    with pytest.raises(UsageError, match="was not pulled from the pinned redis@"):   # push saw no such digest
        infra_build_facts(pinned_cfg, m, "infra/redis", repo, digest, pulled)
    rec = m.infra_result("redis", "push") or {}
    m.record("infra/redis", "push", {**rec, "source": {**rec["source"], "pulled_from": f"redis@{pin}"}})
    st = provenance_statement(infra_build_facts(pinned_cfg, m, "infra/redis", repo, digest, pulled))
    deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [d.get("name") for d in deps] == ["pulled-from"]     # where it came from: no commit of ours built it
    assert deps[0]["uri"] == f"docker-image://redis@{pin}" and deps[0]["digest"] == {"sha256": "ab" * 32}
    assert "pulled from redis@" in deps[0]["annotations"]["note"]
    assert st["predicate"]["buildDefinition"]["buildType"].endswith("/veza-pipeline/infra-pulled/v1")


def test_verify_images_checks_the_infra_documents_images(tmp_path: Path) -> None:
    from pipeline.stages.verify_images import infra_refs

    cfg = _cfg()
    images = _pinned(cfg)
    assert infra_refs(cfg, cfg.env("local"), _manifest(tmp_path, cfg, images)) == list(images.values())
    (tmp_path / "none").mkdir()
    with pytest.raises(UsageError) as err:
        infra_refs(cfg, cfg.env("local"), _manifest(tmp_path / "none", cfg, {}))
    assert "has no pushed digest" in err.value.message
    assert infra_refs(cfg, dataclasses.replace(cfg.env("local"), local_infra=False), _manifest(tmp_path, cfg, {})) == []


def _gate(cfg: Config, env_name: str, *, external: bool = False) -> list[str]:
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.deploy import prepare
    from pipeline.stages.deploy.target import ReleaseTarget
    from pipeline.tools.kubectl import KubeTarget

    env = cfg.env(env_name)
    lines: list[str] = []
    rt = ReleaseTarget(env, KubeTarget(Path("/nonexistent"), "", env.namespace), env.helm_release, external=external)
    prepare.pod_security_gate(ROOT / "helm/veza", rt, [env.values_file], PlainReporter(sink=lines.append), cfg)
    return lines


def test_the_pod_security_gate_checks_the_infra_documents_the_deploy_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.errors import PolicyBlocked
    from pipeline.stages.deploy import prepare

    cfg = _cfg()
    assert any("8 pod template(s) pass (4 of the local infra)" in line for line in _gate(cfg, "local"))
    assert any("7 pod template(s) pass (3 of the local infra)" in line for line in _gate(cfg, "dev"))
    # an external cluster gets no local infra, so the gate has none to check
    assert any(line.endswith("4 pod template(s) pass") for line in _gate(cfg, "dev", external=True))

    def privileged(cfg: Config, secret: str, images: dict[str, str], *, namespace: str) -> list[dict[str, Any]]:
        docs = infra_documents(cfg, secret, images, namespace=namespace)
        docs[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
        return docs

    monkeypatch.setattr(prepare, "infra_documents", privileged)
    with pytest.raises(PolicyBlocked) as err:
        _gate(cfg, "local")
    assert "local's local infra documents" in err.value.message and "privileged" in err.value.message


def test_the_deploy_resumes_only_while_the_infra_runs_the_recorded_digests(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy_holds(): the release's workloads match, so the answer is the infra Deployments' (observed by
    infra_differences, here given as the cluster would answer)."""
    import pipeline.local.infra as infra_mod
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.deploy import drift
    from pipeline.stages.deploy.status import Observation
    from pipeline.stages.deploy.target import ReleaseTarget
    from pipeline.stages.deploy.values import resource_name
    from pipeline.tools import helm
    from pipeline.tools.kubectl import KubeTarget

    cfg = _cfg()
    env = cfg.env("local")
    images = _pinned(cfg)
    m = _manifest(tmp_path, cfg, images)
    ref = "127.0.0.1:5000/veza-dev/veza-docs@" + _digest(7)
    m.record("veza-docs", "deploy", {"status": "deployed", "revision": 3, "image": ref, "digest": _digest(7)})
    name = resource_name("veza", "veza-docs")
    docs = {name: {"metadata": {"name": name, "generation": 1},
                               "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": ref}]}}},
                               "status": {"updatedReplicas": 1, "readyReplicas": 1, "observedGeneration": 1}}}
    seen = Observation(True, helm.ReleaseStatus("veza", "veza-local", 3, "deployed", "", ""), docs)
    monkeypatch.setattr(drift, "observe", lambda rt: seen)
    asked: list[dict[str, str]] = []
    answer: list[str] = []
    monkeypatch.setattr(infra_mod, "infra_differences",
                        lambda target, want, annotations: asked.append(dict(want)) or answer)
    rt = ReleaseTarget(env, KubeTarget(Path("/nonexistent"), "", env.namespace), "veza")
    quiet = PlainReporter(sink=lambda _line: None)
    assert drift.deploy_holds(cfg, env, m, quiet, rt=rt) is None
    assert asked == [images]                                    # the manifest's pinned infra digests
    answer.append("infra nats runs veza-local/nats:2.9, not " + images["nats"])
    assert drift.deploy_holds(cfg, env, m, quiet, rt=rt) == answer[0]
    external = dataclasses.replace(rt, external=True)           # no local infra on an external cluster
    assert drift.deploy_holds(cfg, env, m, quiet, rt=external) is None


def test_verify_images_with_a_service_selection_still_checks_the_infra_the_deploy_applies(tmp_path: Path) -> None:
    """`invoke deploy --service X` applies the infra documents whatever the selection, so the gate in front of it
    checks their images too (before, a selection dropped them: a rebuilt, unsigned infra digest went through)."""
    from pipeline.stages.verify_images import rendered_images

    cfg = _cfg()
    images = _pinned(cfg)
    m = _manifest(tmp_path, cfg, images)
    docs = cfg.env("local").repository(cfg.service("veza-docs"))
    m.record("veza-docs", "push", {"status": "pushed", "repository": docs, "digest": _digest(7),
                                   "tags_pushed": ["sha-ccccccc"], "image_id": IMAGE_ID})
    got = rendered_images(cfg, cfg.env("local"), m, ["veza-docs"])
    assert f"{docs}@{_digest(7)}" in got and set(images.values()) <= set(got), got
