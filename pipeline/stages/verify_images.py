"""The trust gate (`invoke verify-images`, the `verify-images` stage before deploy, and promotion):
every image in the rendered manifests is pinned by digest, is the digest the Release manifest recorded,
is served by the registry, is signed by one of the environment's trusted keys, and has SLSA provenance
whose subject is that digest and whose commit is the release's commit. Otherwise PolicyBlocked (exit 3)
before anything deploys, naming each image and what is missing.

Everything is read from the registry at the time of the check (trust the world, not the journal).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, Environment
from pipeline.core.errors import PolicyBlocked, UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.release_images import infra_subject, pinned_ref_problem
from pipeline.core.reporter import Reporter
from pipeline.stages.image_index import children_of
from pipeline.tools.registry_api import INDEX_TYPES, RegistryClient, split_repository
from pipeline.tools.registry_clients import RegistryClients
from pipeline.trust import envkeys
from pipeline.trust.provenance import check_provenance
from pipeline.trust.signing import check_signature

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")   # a pod spec's, wherever it is


def images_in_manifests(text: str) -> list[str]:
    """Every image of every container list (initContainers, containers, ephemeralContainers) anywhere in
    multi-document Kubernetes YAML, first-seen order: any kind, `kind: List` / `*List` items and custom workloads
    included (what the cluster could run, not only the kinds we render), so nothing a document carries escapes
    the trust check."""
    out: list[str] = []
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml: ~10x faster on a rendered chart

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in CONTAINER_LISTS and isinstance(value, list):
                    for c in value:
                        image = str(c.get("image") or "") if isinstance(c, dict) else ""
                        if image and image not in out:
                            out.append(image)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in yaml.load_all(text, Loader=loader):
        walk(doc)
    return out


def rendered_images(cfg: Config, env: Environment, man: Manifest, services: Sequence[str] = ()) -> list[str]:
    """The images `helm template` puts in env's manifests with the Release manifest's digests (offline), then
    those of the infra documents the deploy applies beside the release (local_infra: pipeline/local/infra.py,
    from the manifest's infra push records; UsageError when one is missing). The infra is checked with a
    `--service` selection too: the deploy applies it whatever the selection."""
    from pipeline.core.manifest import atomic_write
    from pipeline.stages.deploy import CHART, choose_images, image_values
    from pipeline.tools import helm

    if not env.values_file.is_file():
        raise UsageError(f"values file {env.values_file} of environment {env.name} does not exist",
                         f"create it or fix values_file under [environments.{env.name}]")
    choices, _ = choose_images(cfg, man.pushed_images(), list(services), None)
    if not choices:
        raise UsageError(f"nothing to verify for {env.name}: no service has a pushed digest in the manifest",
                         f"run: invoke build push --env {env.name}")
    gen = cfg.state_dir / "deploy" / f"{env.name}-verify-values.yaml"
    gen.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(gen, yaml.safe_dump(image_values(cfg, choices, "")))
    refs = images_in_manifests(helm.template(cfg.root / CHART, env.helm_release, [env.values_file, gen],
                                             namespace=env.namespace))
    return refs + infra_refs(cfg, env, man)


def infra_refs(cfg: Config, env: Environment, man: Manifest) -> list[str]:
    """The images of the infra documents env's deploy applies (none when env runs no infra)."""
    from pipeline.core.release_images import infra_images, pinned_infra
    from pipeline.local.infra import infra_documents

    if not infra_images(cfg, env):
        return []
    docs = infra_documents(cfg, "verify", pinned_infra(cfg, env, man), namespace=env.namespace)
    return images_in_manifests(yaml.safe_dump_all(docs))


def check_image(client: RegistryClient, repo: str, digest: str, trusted: list[ec.EllipticCurvePublicKey], *,
                commit: str | None) -> list[str]:
    """What is missing or wrong for repo@digest (empty = signed and attested as the release says; `commit` None:
    provenance of any commit, for an image of an earlier release).

    An image index (multi-platform image) is checked itself and then each child it names, by digest; a
    child's problems are prefixed with its platform ("linux/arm64 image: no signature …").
    """
    served = client.head_manifest(repo, digest)
    if served is None:
        return [f"the registry does not serve {digest}"]
    problems = []
    sig = check_signature(client, repo, digest, trusted)
    if not sig.ok:
        problems.append(sig.problem)
    prov = check_provenance(client, repo, digest, trusted, commit=commit)
    if not prov.ok:
        problems.append(prov.problem)
    if served.media_type in INDEX_TYPES:
        got = client.get_manifest(repo, digest)
        try:
            children = children_of(got[1]) if got is not None else {}
        except (ValueError, KeyError, TypeError) as exc:
            return [*problems, f"the image index {digest[:19]}… is not readable ({exc})"]
        for plat, child in sorted(children.items()):
            problems += [f"{plat} image: {p}" for p in check_image(client, repo, child, trusted, commit=commit)]
    return problems


def split_image(ref: str) -> tuple[str, str, str]:
    """`host/repo[:tag][@sha256:…]` → (host/repo, tag, digest) (tag/digest may be empty)."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


@dataclass(frozen=True)
class ImageVerdict:
    image: str
    service: str
    problems: tuple[str, ...]


def verify_refs(cfg: Config, env: Environment, man: Manifest, images: Sequence[str], reporter: Reporter, *,
                trusted: list[ec.EllipticCurvePublicKey] | None = None,
                registries: RegistryClients | None = None) -> list[ImageVerdict]:
    """Check each image reference against the Release manifest and the registry; returns one verdict each.

    Trusted keys: env's own and its `trusted_keys` unless given. The release's commit is the manifest's
    `version.sha`. UsageError when the manifest records no commit or env trusts no key.
    """
    keys = trusted if trusted is not None else envkeys.trusted_keys(cfg, env)
    commit = man.commit
    if not commit:
        raise UsageError(f"the Release manifest {man.path} records no git commit", "run `invoke build` first")
    by_repo = {}
    for name in [*man.services(), *(infra_subject(n) for n in man.infra_names())]:
        pushed = man.pushed(name)
        if pushed is not None and pushed.digest:
            by_repo[pushed.repository] = (name, pushed.digest)
    regs = registries or RegistryClients(cfg, env)
    out = []
    for image in images:
        repository, tag, digest = split_image(image)
        service, recorded = by_repo.get(repository, ("?", ""))
        problems: list[str] = []
        address, repo = split_repository(repository)
        client = regs.client(address)
        if not digest:
            served = client.head_manifest(repo, tag or "latest")
            now = served.digest if served else "nothing"
            problems.append(f"referenced by tag, not by digest (:{tag or 'latest'} serves {now[:19]}…)")
            if recorded and served and served.digest != recorded:
                problems.append(f"tag :{tag} moved: it serves {served.digest[:19]}…, the release recorded "
                                f"{recorded[:19]}…")
            digest = served.digest if served else ""
        elif not recorded:
            problems.append("not an image of this Release manifest")
        elif digest != recorded:
            problems.append(f"not the digest the release recorded ({recorded[:19]}…)")
        if digest:
            problems += check_image(client, repo, digest, keys, commit=commit)
        out.append(ImageVerdict(image, service, tuple(problems)))
        state = "done" if not problems else "failed"
        reporter.step("verify-images", service, f"{image}: " + ("; ".join(problems) or "signed, provenance ok"), state)
    return out


def verify_images(cfg: Config, env: Environment, man: Manifest, reporter: Reporter,
                  services: Sequence[str] = (), *, images: Sequence[str] | None = None,
                  registries: RegistryClients | None = None) -> StageSummary:
    """The gate: the rendered images (or `images`) all verify, else PolicyBlocked (exit 3) naming the first
    untrusted image and everything missing for it (each image gets its own reporter line).

    Writes no per-service record: the runner records `stages.verify-images` from the summary.
    """
    t0 = time.monotonic()
    refs = list(images) if images is not None else rendered_images(cfg, env, man, services)
    verdicts = verify_refs(cfg, env, man, refs, reporter, registries=registries)
    bad = [v for v in verdicts if v.problems]
    if bad:
        first = bad[0]
        more = f" (+{len(bad) - 1} more image(s))" if len(bad) > 1 else ""
        raise PolicyBlocked(f"untrusted image {first.image}: {'; '.join(first.problems)}{more}",
                            f"sign and attest it for {env.name} (`invoke sign --env {env.name}` after a push "
                            f"from this commit), or deploy what the release built")
    return StageSummary(f"{len(verdicts)} image(s) signed and attested",
                        {"images": len(verdicts), "duration_s": round(time.monotonic() - t0, 2)})


def applied_problems(ref: str, man: Manifest | None, *, earlier: bool = False) -> tuple[str, str | None]:
    """How an image about to be applied is judged: ("", commit) when `ref` is `repository@sha256:<64 hex>`,
    with the commit its provenance must name (the release's when `ref` is the digest `man` recorded for that
    repository; None, any commit, for an image of an earlier release: kept from the deployed revision, a
    rollback's target, or `earlier`); (problem, None) when `ref` is not pinned by digest. Pure."""
    problem = pinned_ref_problem("image", ref)
    if problem:
        return f"not pinned by digest ({ref})", None
    repository, _, digest = ref.partition("@")
    if man is not None and man.commit and not earlier:
        for name in [*man.services(), *(infra_subject(n) for n in man.infra_names())]:
            pushed = man.pushed(name)
            if pushed is not None and pushed.repository == repository and pushed.digest == digest:
                return "", man.commit
    return "", None


def verify_applied(cfg: Config, env: Environment, man: Manifest | None, images: Mapping[str, str],
                   reporter: Reporter, *, action: str, hint: str, earlier: Collection[str] = (),
                   registries: RegistryClients | None = None) -> None:
    """The check in front of every `helm upgrade`, `helm rollback` and `kubectl apply` of a workload: each image
    of `images` (reference → where it comes from, e.g. "manifest", "kept from revision 4") is pinned by digest,
    served by the registry, signed by one of env's trusted keys for that exact digest and repository, and has
    SLSA provenance a trusted key signed with that digest as subject (and the release's commit when it is the
    digest `man` recorded and not in `earlier`, the references known to be of an earlier release: applied_problems).
    Raises PolicyBlocked (exit 3), one line: `action` refused, the first untrusted image, its source and its
    problems, `hint` as the fix; UsageError when env trusts no key."""
    keys = envkeys.trusted_keys(cfg, env)
    regs = registries or RegistryClients(cfg, env)
    bad: list[tuple[str, str, list[str]]] = []
    for ref, source in images.items():
        problem, commit = applied_problems(ref, man, earlier=ref in earlier)
        if problem:
            problems = [problem]
        else:
            repository, _, digest = ref.partition("@")
            address, repo = split_repository(repository)
            problems = check_image(regs.client(address), repo, digest, keys, commit=commit)
        reporter.step("verify-images", source, f"{ref}: " + ("; ".join(problems) or "signed, provenance ok"),
                      "failed" if problems else "done")
        if problems:
            bad.append((ref, source, problems))
    if bad:
        ref, source, problems = bad[0]
        more = f" (+{len(bad) - 1} more image(s))" if len(bad) > 1 else ""
        raise PolicyBlocked(f"{action} refused: untrusted image {ref} ({source}): {'; '.join(problems)}{more}", hint)
    reporter.info(f"  trust: {len(images)} image(s) signed by {env.name}'s trusted key(s) for their digests")


class VerifyImagesStage(BaseStage):
    """Before deploy: every image in the rendered manifests is signed by a trusted key and attested."""

    name = "verify-images"
    check_only = True   # re-verified on every run, changes nothing (pipeline/contract/stage.py)

    def preflight(self, ctx: RunContext) -> None:
        envkeys.trusted_keys(ctx.cfg, ctx.env)

    def holds(self, ctx: RunContext) -> str | None:
        return "the trust gate is never taken from the record"

    def run(self, ctx: RunContext) -> StageSummary:
        return verify_images(ctx.cfg, ctx.env, ctx.manifest, ctx.reporter, ctx.services, registries=ctx.registries)


def published_attachments(cfg: Config, env: Environment, man: Manifest, services: Sequence[str] = (), *,
                          registries: RegistryClients | None = None) -> dict[str, dict[str, str]]:
    """Post-release verification: re-read each published digest from the registry and recheck its signature
    (env's trusted keys), provenance (subject digest, release commit) and the SBOM/VEX attachments.

    Covers the selected services, else every recorded service and the infra images env runs (recorded_subjects).
    Returns subject (a service, or `infra/<name>`) → {"image", "signature", "provenance", "sbom", "vex"}:
    "ok"/"present", "missing" or the problem ("vex": "none (nothing justified)" when the ignore file justified
    nothing to attach).
    Never raises for what it finds (the report records it); registry errors do raise.
    """
    from pipeline.stages.sbom import sbom_tag
    from pipeline.trust.attach import attachment_tag

    trusted = envkeys.trusted_keys(cfg, env)
    commit = man.commit
    out: dict[str, dict[str, str]] = {}
    regs = registries or RegistryClients(cfg, env)
    from pipeline.core.release_images import recorded_subjects

    for name in recorded_subjects(cfg, env, man, services):   # the infra images env runs too (no selection)
        pushed = man.pushed(name)
        if pushed is None or not pushed.digest:
            continue
        address, repo = split_repository(pushed.repository)
        c = regs.client(address)
        sig = check_signature(c, repo, pushed.digest, trusted)
        prov = check_provenance(c, repo, pushed.digest, trusted, commit=commit)
        out[name] = {
            "image": pushed.ref,
            "signature": "ok" if sig.ok else sig.problem,
            "provenance": "ok" if prov.ok else prov.problem,
            "sbom": "present" if c.head_manifest(repo, sbom_tag(pushed.digest)) else "missing",
            "vex": "present" if c.head_manifest(repo, attachment_tag(pushed.digest, "vex"))
            else "missing" if (signed := man.signed(name)) and signed.vex else "none (nothing justified)",
        }
    return out
