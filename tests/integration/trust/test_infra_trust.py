"""An infra image ([infra.NAME]) goes the services' way, against the real engine and a real registry: the push
stage sends it from the engine to `<registry>/<namespace>/infra/<name>` by a content tag and records its digest,
the sign stage signs and attests it with the environment's key, the trust gate accepts it only then, and the
resume checks look at the world (the registry, the engine's image), not at the record.

A tiny image imported into the engine stands in for PostgreSQL (the same code path; a 600 MB push would only
make the test slow). Registry on 127.0.0.1:19600-19699 (trust_fixtures); the image is removed afterwards.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.core.config import Base, Config, Infra
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import LABEL_RUN
from pipeline.local.bases import (
    LABEL_BUILDER,
    LABEL_LAYERS,
    LABEL_PACKAGES,
    LABEL_PACKAGES_DIGEST,
    LABEL_RECIPE_DIGEST,
    files_digest,
    layers_digest,
    packages_digest,
)
from pipeline.stages.push import push_images, registry_serves
from pipeline.stages.sign import sign_images, signatures_hold
from pipeline.stages.verify_images import infra_refs, verify_refs
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from tests.integration.build_records import built_record
from tests.integration.registry_fixtures import free_loopback_port
from tests.integration.trust.trust_fixtures import COMMIT, TrustWorld

pytestmark = [pytest.mark.engine, pytest.mark.registry]
QUIET = PlainReporter(sink=lambda _line: None)


def _tiny_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def build_fact_changes(recipe_digest: str, run: str, layers: list[str]) -> list[str]:
    """The LABEL changes giving an imported image the build facts `invoke bases` records (pipeline/local/bases.py)."""
    listed = "libc6=2.36-9+deb12u10,tiny-server=1.0-1"
    labels = {LABEL_RUN: run, LABEL_RECIPE_DIGEST: recipe_digest, LABEL_PACKAGES: listed,
              LABEL_PACKAGES_DIGEST: packages_digest(listed), LABEL_LAYERS: layers_digest(layers),
              LABEL_BUILDER: json.dumps({"kind": "legacy", "docker_cli": "20.10.24", "engine": "20.10.24",
                                         "started": "2026-12-01T00:00:00Z"})}
    return [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]


@pytest.fixture
def infra_world(trust_world: TrustWorld, docker_client: Any) -> Iterator[tuple[TrustWorld, Config, str]]:
    """(world, config with [infra.tiny] run by dev, the local reference of its image: labelled with the build
    facts of the tree's current recipe `tiny`, as `invoke bases` labels what it builds)."""
    run = "t" + uuid.uuid4().hex[:10]
    ref = f"veza-test-infra/{run}:1"
    recipe = trust_world.root / "pipeline/local/recipes/tiny"
    recipe.mkdir(parents=True)
    (recipe / "Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")

    def make(content: bytes) -> None:
        # imported once to learn its layers (the same tar gives the same layer), then with every build fact
        docker_client.api.import_image_from_data(_tiny_tar(content), repository=ref.split(":")[0], tag="1",
                                                 changes=[f"LABEL {LABEL_RUN}={run}"])
        layers = docker_client.api.inspect_image(ref)["RootFS"]["Layers"]
        docker_client.api.import_image_from_data(_tiny_tar(content), repository=ref.split(":")[0], tag="1",
                                                 changes=build_fact_changes(files_digest(recipe), run, layers))

    make(b"tiny infra " + run.encode())
    w = trust_world
    dev = dataclasses.replace(w.cfg.env("dev"), local_infra=True)
    cfg = dataclasses.replace(w.cfg, bases={"tiny": Base("tiny", "tiny:1", ref, "tiny")},
                              infra={"tiny": Infra("tiny", "tiny", 5432)}, environments={**w.cfg.environments,
                                                                                          "dev": dev})
    try:
        yield w, cfg, ref
    finally:
        # newest first: an image built FROM another (the derived-image case) goes before its parent
        images = docker_client.images.list(filters={"label": f"{LABEL_RUN}={run}"})
        for image in sorted(images, key=lambda i: str(i.attrs.get("Created") or ""), reverse=True):
            try:
                docker_client.images.remove(image.id, force=True)
            except Exception:   # removed with its child already
                pass


def _manifest(w: TrustWorld, docker_client: Any, run: str) -> Manifest:
    """dev's Release manifest with veza-docs built: a tiny image imported into the engine under its tag."""
    repository = w.repository("dev")
    docker_client.api.import_image_from_data(_tiny_tar(b"docs " + run.encode()), repository=repository,
                                             tag="sha-0123456", changes=[f"LABEL {LABEL_RUN}={run}"])
    m = Manifest.new(w.cfg.state_dir / "dev" / "manifest.json", env="dev", release_id=f"dev-{COMMIT[:7]}",
                     version={"sha": COMMIT, "short_sha": COMMIT[:7], "branch": "main", "dirty": False})
    m.set_service("veza-docs", repository=repository, tags=["sha-0123456"], input_digest="sha256:" + "1" * 64)
    m.record("veza-docs", "build", built_record(docker_client.images.get(f"{repository}:sha-0123456").id, COMMIT))
    return m


def test_an_infra_image_is_pushed_signed_and_verified_like_a_service_image(
        infra_world: tuple[TrustWorld, Config, str], docker_client: Any) -> None:
    w, cfg, ref = infra_world
    env = cfg.env("dev")
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, env, man, QUIET)

    pushed = man.pushed("infra/tiny")
    assert pushed is not None and pushed.ok, man.infra_result("tiny", "push")
    assert pushed.repository == f"{w.registry.address}/t-dev/infra/tiny"
    image_id = docker_client.images.get(ref).id
    assert pushed.image_id == image_id and pushed.tags == (f"1-{image_id[7:19]}",)
    assert pushed.source["ref"] == ref
    served = w.client.head_manifest(split_repository(pushed.repository)[1], pushed.tags[0])
    assert served is not None and served.digest == pushed.digest
    subjects = ["veza-docs", "infra/tiny"]
    assert registry_serves(cfg, man, subjects, env=env) is None

    # pinned by digest in the documents the deploy applies, and untrusted until signed
    (infra_ref,) = infra_refs(cfg, env, man)
    assert infra_ref == pushed.ref
    envkeys.keygen(cfg, env)
    (before,) = verify_refs(cfg, env, man, [infra_ref], QUIET)
    assert before.service == "infra/tiny" and any("no signature" in p for p in before.problems), before
    assert signatures_hold(cfg, env, man, ["veza-docs"], infra=True) is not None

    sign_images(cfg, env, man, QUIET)
    signed = man.signed("infra/tiny")
    assert signed is not None and signed.subject == pushed.digest
    (after,) = verify_refs(cfg, env, man, [infra_ref], QUIET)
    assert after.problems == (), after
    assert signatures_hold(cfg, env, man, ["veza-docs"], infra=True) is None

    # a second push is a no-op by digest; a release that signs again writes nothing new
    push_images(cfg, env, man, QUIET)
    again = man.pushed("infra/tiny")
    assert again is not None and again.digest == pushed.digest and str(again.status) == "skipped"


def test_a_rebuilt_infra_image_no_longer_holds_the_recorded_push(infra_world: tuple[TrustWorld, Config, str],
                                                                  docker_client: Any) -> None:
    w, cfg, ref = infra_world
    env = cfg.env("dev")
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, env, man, QUIET)
    assert registry_serves(cfg, man, ["infra/tiny"], env=env) is None
    docker_client.api.import_image_from_data(_tiny_tar(b"rebuilt by invoke bases --force"),
                                             repository=ref.split(":")[0], tag="1",
                                             changes=[f"LABEL {LABEL_RUN}={ref.split('/')[1].split(':')[0]}"])
    why = registry_serves(cfg, man, ["infra/tiny"], env=env)
    assert why is not None and why.startswith("infra/tiny: the engine's image is"), why


def test_an_infra_image_built_from_another_recipe_or_without_build_facts_is_not_signed(
        infra_world: tuple[TrustWorld, Config, str], docker_client: Any) -> None:
    """The facts are read from the pushed image's config in the registry: a recipe edited since the image was
    built, or an image without the labels, is refused (exit 2) before anything is signed."""
    w, cfg, ref = infra_world
    env = cfg.env("dev")
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, env, man, QUIET)
    envkeys.keygen(cfg, env)
    (w.root / "pipeline/local/recipes/tiny/Dockerfile").write_text("FROM scratch\nCOPY other /payload\n")
    with pytest.raises(UsageError) as err:
        sign_images(cfg, env, man, QUIET)
    assert "infra/tiny" in err.value.message and "was built from recipe" in err.value.message
    assert err.value.exit_code == 2 and "invoke bases" in err.value.hint
    docs = man.pushed("veza-docs")
    assert docs is not None and man.signed("veza-docs") is None and man.signed("infra/tiny") is None
    _, repo = split_repository(docs.repository)
    assert w.client.head_manifest(repo, docs.digest.replace(":", "-") + ".sig") is None   # nothing signed

    # an image built FROM the built one (one more layer) inherits its labels, not its layers: refused
    (w.root / "pipeline/local/recipes/tiny/Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    run = ref.split("/")[1].split(":")[0]
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {ref}\nCOPY extra /extra\n".encode()), ("extra", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ctx.seek(0)
    for _ in docker_client.api.build(fileobj=ctx, custom_context=True, tag=ref, labels={LABEL_RUN: run}, rm=True):
        pass
    assert docker_client.api.inspect_image(ref)["Config"]["Labels"][LABEL_RECIPE_DIGEST]   # inherited
    push_images(cfg, env, man, QUIET)
    with pytest.raises(UsageError, match="does not have the layers `invoke bases` built"):
        sign_images(cfg, env, man, QUIET)

    # an image with none of the labels (a hand-made or upstream image of no pinned origin): refused too
    docker_client.api.import_image_from_data(_tiny_tar(b"no facts"), repository=ref.split(":")[0], tag="1",
                                             changes=[f"LABEL {LABEL_RUN}={run}"])
    push_images(cfg, env, man, QUIET)
    with pytest.raises(UsageError, match="not pinned by digest"):
        sign_images(cfg, env, man, QUIET)


def test_infra_images_get_their_sbom_vex_and_published_re_read_like_services(
        infra_world: tuple[TrustWorld, Config, str], docker_client: Any, tmp_path: Any) -> None:
    from pipeline.stages.sbom import attach_sboms, sbom_tag
    from pipeline.stages.verify_images import published_attachments
    from pipeline.trust.vex import vex_for_release

    w, cfg, ref = infra_world
    env = cfg.env("dev")
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, env, man, QUIET)
    for subject in ("veza-docs", "infra/tiny"):   # the scan stage's records (its SBOM files); the scan is not the claim
        sbom = tmp_path / f"{subject.replace('/', '-')}.cdx.json"
        sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "metadata": {"x": subject}}))
        pushed = man.pushed(subject)
        assert pushed is not None
        man.record(subject, "scan", {"status": "pass", "image_id": pushed.image_id, "sbom": str(sbom),
                                     "report": str(sbom)})
    (w.root / ".trivyignore.yaml").write_text("ignores:\n  - {id: CVE-2099-7, reason: not reached, "
                                              "expires: 2099-01-01}\n")
    vex = vex_for_release(cfg, man, tmp_path, env)
    assert vex is not None
    products = [p["@id"] for p in json.loads(vex.read_text())["statements"][0]["products"]]
    infra = man.pushed("infra/tiny")
    assert infra is not None and any(p.startswith("pkg:oci/tiny@") for p in products), products
    envkeys.keygen(cfg, env)
    sign_images(cfg, env, man, QUIET, vex=vex)

    refs = attach_sboms(cfg, man, QUIET, infra_of=env)
    assert refs["infra/tiny"] == f"{infra.repository}:{sbom_tag(infra.digest)}"
    _, repo = split_repository(infra.repository)
    got = w.client.get_manifest(repo, sbom_tag(infra.digest))
    assert got is not None and json.loads(got[1])["subject"]["digest"] == infra.digest
    rec = man.sbom("infra/tiny")
    assert rec is not None and rec.ref == refs["infra/tiny"]
    published = published_attachments(cfg, env, man)
    assert published["infra/tiny"] == {"image": infra.ref, "signature": "ok", "provenance": "ok",
                                       "sbom": "present", "vex": "present"}, published


def test_a_pulled_infra_image_is_signed_only_when_pinned_and_attested_as_pulled(
        infra_world: tuple[TrustWorld, Config, str], docker_client: Any, tmp_path: Any) -> None:
    """An upstream infra image, pulled by the digest pipeline.toml pins (as `invoke bases` pulls it), is signed
    with the material `pulled-from <repository>@sha256:…` and no Dockerfile; unpinned, it is refused."""
    from pipeline.local.registry import LocalRegistry
    from pipeline.tools import docker as docker_tool
    from pipeline.tools import proc
    from pipeline.trust.attach import attachment_tag, read_layers

    w, cfg, ref = infra_world
    run = ref.split("/")[1].split(":")[0]
    with LocalRegistry(free_loopback_port(5110, 5119), root=tmp_path / "upstream") as up:   # this area's ports
        upstream = f"{up.address}/library-{run}/tiny:1"
        docker_client.api.import_image_from_data(_tiny_tar(b"upstream " + run.encode()),
                                                 repository=upstream.rsplit(":", 1)[0], tag="1",
                                                 changes=[f"LABEL {LABEL_RUN}={run}"])
        proc.run(["docker", "push", upstream], timeout=120)
        digest = docker_client.api.inspect_image(upstream)["RepoDigests"][0].partition("@")[2]
        docker_client.api.remove_image(upstream, force=True)
        docker_client.api.remove_image(ref, force=True)        # the built one: the engine has only the pull now
        pin = f"{upstream.rsplit(':', 1)[0]}@{digest}"
        ok, why = docker_tool.pull_image(pin, timeout=60)           # what `invoke bases` does with a pin
        assert ok, why
        docker_tool.tag_image(pin, *ref.rsplit(":", 1))

    base = cfg.bases["tiny"]
    env = cfg.env("dev")
    man = _manifest(w, docker_client, run)
    envkeys.keygen(cfg, env)
    push_images(cfg, env, man, QUIET)
    with pytest.raises(UsageError, match="is not pinned by digest"):          # upstream "tiny:1": a tag
        sign_images(cfg, env, man, QUIET)

    pinned_cfg = dataclasses.replace(cfg, bases={"tiny": dataclasses.replace(base, upstream=f"{upstream}@{digest}")})
    push_images(pinned_cfg, env, man, QUIET)
    pushed = man.pushed("infra/tiny")
    assert pushed is not None and pushed.source.get("pulled_from") == pin
    sign_images(pinned_cfg, env, man, QUIET)
    _, repo = split_repository(pushed.repository)
    (layer,) = [la for la in read_layers(w.client, repo, attachment_tag(pushed.digest, "att")) or []]
    statement = json.loads(base64.b64decode(json.loads(layer.data)["payload"]))
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [d.get("name") for d in deps] == ["pulled-from"]   # no commit of ours built it
    assert deps[0]["uri"] == f"docker-image://{pin}" and deps[0]["digest"] == {"sha256": digest[7:]}
    assert statement["predicate"]["buildDefinition"]["buildType"].endswith("/veza-pipeline/infra-pulled/v1")


def test_promotion_carries_the_infra_images_and_the_target_verifies_them(
        infra_world: tuple[TrustWorld, Config, str], docker_client: Any) -> None:
    """Promotion carries the whole release image list (core/release_images.py): the services and the infra images
    the target runs, each copied by digest, signed and attested with the target's key, and recorded in the
    target's Release manifest, so the target's trust gate (`invoke verify-images --env <target>`) verifies the
    infra too."""
    from pipeline.release.promote import run_promote
    from pipeline.stages.verify_images import check_image, verify_images

    w, cfg, ref = infra_world
    dev = cfg.env("dev")
    prod = dataclasses.replace(w.cfg.env("prod"), local_infra=True, promote_requires=())
    cfg = dataclasses.replace(cfg, environments={**cfg.environments, "prod": prod})
    envkeys.keygen(cfg, dev)
    envkeys.keygen(cfg, prod)
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, dev, man, QUIET)
    sign_images(cfg, dev, man, QUIET)   # veza-docs and infra/tiny, with dev's key
    docs, infra = man.pushed("veza-docs"), man.pushed("infra/tiny")
    assert docs is not None and infra is not None

    res = run_promote(cfg, dev, prod, man, QUIET, via="registry-api")
    assert set(res) == {"veza-docs", "infra/tiny"}
    target = Manifest.load(cfg.state_dir / "prod" / "manifest.json")
    assert target.env == "prod" and target.commit == COMMIT
    pushed = target.pushed("infra/tiny")
    prod_infra = prod.repository_for("infra/tiny")
    assert pushed is not None and (pushed.repository, pushed.digest) == (prod_infra, infra.digest)
    assert pushed.tags == infra.tags   # its content tag, not prod's moving tags
    assert w.client.head_manifest(split_repository(prod_infra)[1], infra.tags[0]) is not None

    # prod's trust gate, on prod's manifest: the service and the infra documents' images verify with prod's key
    refs = [f"{w.repository('prod')}@{docs.digest}", *infra_refs(cfg, prod, target)]
    assert f"{prod_infra}@{infra.digest}" in refs
    summary = verify_images(cfg, prod, target, QUIET, images=refs)
    assert summary.fields["images"] == 2
    # signed there by prod's key (the identity names prod's repository): dev's key alone does not verify it
    dev_keys = [envkeys.signing_key(cfg, dev).public_key()]
    assert check_image(w.client, split_repository(prod_infra)[1], infra.digest, dev_keys, commit=COMMIT)
