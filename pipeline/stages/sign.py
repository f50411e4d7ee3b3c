"""The sign stage (after push): sign every pushed digest with the environment's key and attach its SLSA v1
provenance (DSSE-signed) and the OpenVEX document, by the tag schema (`sha256-<hex>.sig/.att/.vex`).

Signing in place, by digest, is idempotent: a digest already signed by this key with a provenance that
verifies is left as it is (the no-op release writes nothing). Works from the Release manifest alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError, StageFailed, UsageError
from pipeline.core.manifest import INFRA_PREFIX, Manifest
from pipeline.core.release_images import infra_images
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import AttachStatus, SignStatus
from pipeline.stages.infra_provenance import infra_build_facts, registry_image_config
from pipeline.tools.registry_answers import digest_of
from pipeline.tools.registry_api import RegistryClient, split_repository
from pipeline.tools.registry_clients import RegistryClients
from pipeline.trust import envkeys
from pipeline.trust.provenance import (
    BuildFacts,
    attach_provenance,
    check_provenance,
    provenance_statement,
    sign_statement,
)
from pipeline.trust.signing import sign_image

BUILD_TYPE_PATH = "veza-pipeline/docker-build/v1"


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the public key's DER (SubjectPublicKeyInfo): names a key in records without revealing anything."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return digest_of(der)


def pushed_images(cfg: Config, man: Manifest, services: list[str] | None,
                  infra_of: Environment | None = None) -> list[tuple[str, str, str]]:
    """(subject, repository, digest) of every selected service with a pushed digest, then, with `infra_of`, of
    every infra image that environment runs (subject `infra/<name>`: core/release_images.py); UsageError
    otherwise."""
    names = [s.name for s in cfg.select(services)] if services else man.services()
    if not names:
        raise UsageError(f"the Release manifest {man.path} lists no service", "run `invoke build push` first")
    if infra_of is not None:
        names += [i.subject for i in infra_images(cfg, infra_of)]
    out = []
    for name in names:
        pushed = man.pushed(name)
        if pushed is None or not pushed.ok or not pushed.digest:
            raise UsageError(f"{name} has no pushed digest in the Release manifest", "run `invoke push` first")
        out.append((name, pushed.repository, pushed.digest))
    return out


def build_facts(cfg: Config, man: Manifest, service: str, repository: str, digest: str, *,
                platforms: tuple[str, ...] = ()) -> BuildFacts:
    """The provenance facts of one pushed image (an index's child: `platforms` = its platform; the index:
    every platform), from the Release manifest and the config.

    The commit, invocation, times and builder are the build's (`Built.origin`, kept by the build stage and,
    for a reused image, read from its labels); a reused image adds its reuse (`Built.reuse`), and the Dockerfile is
    the one it was built from (by digest). UsageError (exit 2) when the manifest records no commit, or the build
    record has no origin or no Dockerfile digest (written before they were kept): provenance never guesses them
    from the signing run or today's tree.
    """
    version = man.version_facts()
    commit = man.commit
    if not commit:
        raise UsageError(f"the Release manifest {man.path} records no git commit", "run `invoke build` first")
    branch = str(version.get("branch") or "")
    source = cfg.source_url or f"file://{cfg.root}"
    svc = cfg.service(service)
    built = man.built(service)
    origin = built.origin if built else None
    reuse = built.reuse if built else None
    dockerfile = svc.dockerfile
    rel = str(dockerfile.relative_to(cfg.root)) if dockerfile.is_relative_to(cfg.root) else str(dockerfile)
    context = str(svc.context.relative_to(cfg.root)) if svc.context.is_relative_to(cfg.root) else str(svc.context)
    if built is None or origin is None or not built.dockerfile_digest:
        missing = "build record" if built is None else "origin" if origin is None else "Dockerfile digest"
        raise UsageError(f"{service}'s {missing} is missing from the Release manifest {man.path}: its provenance "
                         "cannot describe the build that made it",
                         f"rebuild it: invoke build --service {service} (then push and sign)")
    dockerfile_sha = built.dockerfile_digest.removeprefix("sha256:")   # the file it was built from, not today's
    versions = {k: v for k, v in (("builder", origin.builder), ("docker-cli", origin.builder_version),
                                  ("docker-engine", origin.engine_version)) if v}
    return BuildFacts(
        repository=repository, digest=digest, commit=origin.commit, dirty=origin.dirty,
        source_uri=f"git+{source}" + (f"@refs/heads/{branch}" if branch else ""),
        dockerfile=rel, dockerfile_sha256=dockerfile_sha, input_digest=built.input_digest,
        build_args=dict(built.build_args), base_images=dict(built.base_images),
        builder_id=cfg.signing.builder_id, build_type=f"{source}/{BUILD_TYPE_PATH}",
        invocation_id=origin.run_id, started_on=origin.started_on, finished_on=origin.finished_on,
        platforms=platforms, builder_version=versions, context=context,
        context_sha256=built.context_digest.removeprefix("sha256:"),
        reuse_run=reuse.run_id if reuse else "", reuse_commit=reuse.commit if reuse else "",
        reused_on=reuse.at if reuse else "")


def sign_images(cfg: Config, env: Environment, man: Manifest, reporter: Reporter,
                services: list[str] | None = None, *, vex: Path | None = None,
                registries: RegistryClients | None = None) -> StageSummary:
    """Sign each pushed digest with env's key, attach provenance (and `vex`, an OpenVEX file, when given).

    A multi-platform image is signed and attested as its index digest and as each child's digest (the
    records' `children`: platform → tag). Records each service's `signature` and `provenance` records.
    UsageError (exit 2) before anything is written when a digest, the key or its passphrase is missing;
    StageFailed when the registry refuses.
    """
    t0 = time.monotonic()
    images = pushed_images(cfg, man, services, None if services else env)   # --service: that service alone
    key = envkeys.signing_key(cfg, env)
    pub = key.public_key()
    kid = key_id(pub)
    commit = man.commit
    regs = registries or RegistryClients(cfg, env)
    for name, repository, digest in images:   # an image its build's facts cannot describe: refused first (exit 2)
        if name.startswith(INFRA_PREFIX):
            infra_facts(cfg, man, name, regs.client(split_repository(repository)[0]), repository, digest)
        else:
            build_facts(cfg, man, name, repository, digest)
    counts = {"signed": 0, "already": 0, "attested": 0}
    for name, repository, digest in images:
        address, repo = split_repository(repository)
        client = regs.client(address)
        pushed = man.pushed(name)
        children = dict(pushed.children) if pushed is not None else {}
        try:
            sig_tag, signed_now, attested = _sign_and_attest(cfg, man, name, client, repository, digest, key,
                                                             commit=commit,
                                                             platforms=tuple(sorted(children)))
            att_tag = f"{digest.replace(':', '-')}.att"
            counts["attested"] += attested
            child_sigs: dict[str, str] = {}
            child_atts: dict[str, str] = {}
            for plat, child in sorted(children.items()):
                tag, now, att = _sign_and_attest(cfg, man, name, client, repository, child, key, commit=commit,
                                                 platforms=(plat,))
                child_sigs[plat] = f"{repository}:{tag}"
                child_atts[plat] = f"{repository}:{child.replace(':', '-')}.att"
                signed_now, counts["attested"] = signed_now or now, counts["attested"] + att
            extra: dict[str, Any] = {"children": child_sigs} if children else {}
            if vex is not None:
                from pipeline.trust.vex import attach_vex

                extra["vex"] = f"{repository}:{attach_vex(client, repo, digest, vex)}"
        except PipelineError as exc:
            raise StageFailed(f"cannot sign {name} ({repository}@{digest}): {exc.message}", exc.hint) from None
        counts["signed" if signed_now else "already"] += 1
        man.record(name, "signature", {"status": SignStatus.SIGNED, "ref": f"{repository}:{sig_tag}",
                                       "subject": digest, "key": kid, **extra})
        man.record(name, "provenance", {"status": AttachStatus.ATTACHED, "ref": f"{repository}:{att_tag}",
                                        "subject": digest, "commit": commit, "predicate_type": "https://slsa.dev/provenance/v1",
                                        **({"children": child_atts} if children else {})})
        reporter.step("sign", name, f"{repository}@{digest[:19]}… "
                      f"{'signed' if signed_now else 'already signed'} ({kid[:19]}…)", "done")
    detail = (f"{counts['signed']} signed, {counts['already']} already signed, "
              f"{counts['attested']} provenance attached")
    return StageSummary(detail, {"key": kid, **counts, "duration_s": round(time.monotonic() - t0, 2)})


def _sign_and_attest(cfg: Config, man: Manifest, name: str, client: RegistryClient, repository: str, digest: str,
                     key: ec.EllipticCurvePrivateKey, *, commit: str,
                     platforms: tuple[str, ...]) -> tuple[str, bool, int]:
    """Sign `repository@digest` and attach its provenance unless a valid one by this key is there;
    (signature tag, signed now, 1 when provenance was attached now else 0)."""
    repo = split_repository(repository)[1]
    if name.startswith(INFRA_PREFIX):   # before the signature: an image its facts cannot describe is not signed
        facts = infra_facts(cfg, man, name, client, repository, digest)
    else:
        facts = build_facts(cfg, man, name, repository, digest, platforms=platforms)
    sig_tag, signed_now = sign_image(client, repo, digest, key)
    if check_provenance(client, repo, digest, [key.public_key()], commit=commit).ok:
        return sig_tag, signed_now, 0
    attach_provenance(client, repo, digest, sign_statement(provenance_statement(facts), key))
    return sig_tag, signed_now, 1


def infra_facts(cfg: Config, man: Manifest, name: str, client: RegistryClient, repository: str,
                digest: str) -> BuildFacts:
    """The provenance facts of an infra image, from its config as the registry serves it
    (pipeline/stages/infra_provenance.py); UsageError (exit 2) when they cannot describe it."""
    return infra_build_facts(cfg, man, name, repository, digest, registry_image_config(client, repository, digest))


def signatures_hold(cfg: Config, env: Environment, man: Manifest, services: list[str], *,
                    registries: RegistryClients | None = None, infra: bool = False) -> str | None:
    """None when the registry still serves, for every selected pushed digest (and with `infra`, every infra
    image env runs), a signature and provenance by env's trusted keys; else the first difference (one line)."""

    try:
        images = pushed_images(cfg, man, services or None, env if infra else None)
        trusted = envkeys.trusted_keys(cfg, env)
    except PipelineError as exc:
        return exc.message
    found = first_trust_problem(cfg, man, images, trusted, registries=registries)
    return f"{found[0]}: {found[2][0]}" if found else None


def first_trust_problem(cfg: Config, man: Manifest, images: list[tuple[str, str, str]],
                        trusted: Any, *, registries: RegistryClients | None = None
                        ) -> tuple[str, str, list[str]] | None:
    """The first (service, repository@digest, problems) whose signature or provenance (for the manifest's
    commit) the registry does not hold by a trusted key; None when every image checks out."""
    from pipeline.stages.verify_images import check_image

    commit = man.commit
    regs = registries or RegistryClients(cfg)
    for name, repository, digest in images:
        address, repo = split_repository(repository)
        problems = check_image(regs.client(address), repo, digest, trusted, commit=commit)
        if problems:
            return name, f"{repository}@{digest}", problems
    return None


class SignStage(BaseStage):
    """Sign every pushed digest with the environment's key; attach provenance (and VEX) by the tag schema."""

    name = "sign"

    def preflight(self, ctx: RunContext) -> None:
        """The key exists and its passphrase decrypts it, before anything is built or pushed."""
        envkeys.signing_key(ctx.cfg, ctx.env)

    def holds(self, ctx: RunContext) -> str | None:
        why = signatures_hold(ctx.cfg, ctx.env, ctx.manifest, ctx.selected(), registries=ctx.registries,
                              infra=not ctx.services)
        return f"{why}; signing again" if why else None

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.trust.vex import vex_for_release

        vex = vex_for_release(ctx.cfg, ctx.manifest, ctx.run_dir, None if ctx.services else ctx.env)
        return sign_images(ctx.cfg, ctx.env, ctx.manifest, ctx.reporter, ctx.services or None, vex=vex,
                           registries=ctx.registries)


def signs(env: Environment) -> bool:
    """Does this environment sign its images (the `sign` stage is among its stages)?"""
    return "sign" in env.stages


def verifies(env: Environment) -> bool:
    """Does this environment require signed, attested images (it signs, or gates with `verify-images`)?"""
    return "sign" in env.stages or "verify-images" in env.stages


def check_before_promotion(cfg: Config, src: Environment, man: Manifest,
                           images: list[tuple[str, str, str]], *, dst: Environment | None = None,
                           registries: RegistryClients | None = None) -> None:
    """Promotion's trust gate: each (service, source repository, digest) is signed by src's trusted keys and
    attested for the manifest's commit; PolicyBlocked (exit 3) naming the image otherwise. When src neither signs
    nor verifies: nothing to check for a target that does not either, PolicyBlocked for one that does (nothing
    vouches for the images it would sign with its own key or deploy)."""
    from pipeline.core.errors import PolicyBlocked

    if not verifies(src):
        if dst is not None and verifies(dst):
            raise PolicyBlocked(f"promotion refused: {src.name} neither signs nor verifies its images, so no trusted "
                                f"key vouches for them, and {dst.name} would trust them",
                                f"promote from an environment that signs (add \"sign\" to "
                                f"[environments.{src.name}].stages and release it again)")
        return
    found = first_trust_problem(cfg, man, images, envkeys.trusted_keys(cfg, src), registries=registries)
    if found:
        name, ref, problems = found
        raise PolicyBlocked(f"promotion refused: {ref} ({name}): {'; '.join(problems)}",
                            f"sign and attest it in {src.name} first: invoke sign --env {src.name}")


def sign_promoted(cfg: Config, dst: Environment, man: Manifest, name: str, repository: str, digest: str, *,
                  key: ec.EllipticCurvePrivateKey, registries: RegistryClients | None = None) -> str:
    """Sign a promoted digest in dst's repository with dst's key and attach its provenance (an index: each
    child too); returns the signature reference (`repository:sha256-<hex>.sig`)."""
    address, _ = split_repository(repository)
    client = (registries or RegistryClients(cfg, dst)).client(address)
    commit = man.commit
    pushed = man.pushed(name)
    children = dict(pushed.children) if pushed is not None else {}
    tag, _, _ = _sign_and_attest(cfg, man, name, client, repository, digest, key, commit=commit,
                                 platforms=tuple(sorted(children)))
    for plat, child in sorted(children.items()):   # an index's children were copied by digest with it
        _sign_and_attest(cfg, man, name, client, repository, child, key, commit=commit,
                         platforms=(plat,))
    return f"{repository}:{tag}"
