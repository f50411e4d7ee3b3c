"""Promotion: copy the exact images (by digest) that passed in one environment to the next one: the whole release
image list (core/release_images.py), the services and, where the target runs them, the infra images.

No rebuild and no pull through the engine: skopeo copies registry-to-registry with --preserve-digests
(the registry API's cross-repository mount is the fallback inside one registry when skopeo is missing).
The target environment's `promote_requires` gates ("scan", "smoke") are checked for every selected
service before anything is copied, and so is the trust gate where the source signs or verifies (each
digest signed by its trusted keys, attested for the release's commit): a refusal (PolicyBlocked, exit 3)
leaves nothing half-done. A target that signs gets each promoted digest signed with its own key.
Every target tag is then verified through the registry API to answer the source digest. The target then holds
the release: its Release manifest is written with the promoted digests at its own repositories (and the source's
version, build, scan and smoke records of those digests), so `invoke verify-images --env <target>` and
`invoke deploy --env <target>` work on exactly what was promoted, infra included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from functools import partial
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import PolicyBlocked, StageFailed, ToolMissing, UsageError
from pipeline.core.manifest import INFRA_PREFIX, Manifest, manifest_path
from pipeline.core.redact import redact
from pipeline.core.release_images import INFRA_REPOSITORY, infra_images
from pipeline.core.reporter import Reporter
from pipeline.core.retry import with_retries
from pipeline.core.vocab import PromotionStatus, ScanStatus, SmokeStatus, now_iso
from pipeline.tools import skopeo
from pipeline.tools.registry_api import (
    Credentials,
    RegistryClient,
    copy_within_registry,
    split_repository,
)
from pipeline.tools.registry_clients import RegistryClients
from pipeline.versioning.tagging import TagInputs, tags_for

# promote_requires gates → the recorded status each service needs (the words the scan and smoke stages write;
# a record with any other word is refused by the manifest's view, naming the service and the field).
PASSING: dict[str, StrEnum] = {"scan": ScanStatus.PASS, "smoke": SmokeStatus.PASS}


def env_tags(env: Environment, version: Mapping[str, Any]) -> list[str]:
    """The tags env gets for a recorded release (its manifest's version facts), by the planning policy
    (pipeline.versioning.tagging): a dev pre-release never gets the moving tags X and X.Y."""
    tags = tags_for(env, TagInputs.from_facts(dict(version)))
    if not tags:
        raise UsageError(f"no tag could be computed for environment '{env.name}' (tags: {list(env.tags)})",
                         "check the release's version facts in the manifest")
    return tags


def _source(man: Manifest, name: str, src_env: Environment, src_repo: str) -> str:
    """The digest of the service in the source environment: its push result or an earlier promotion."""
    push = man.pushed(name)
    if push is not None and push.ok and push.digest and push.repository == src_repo:
        return push.digest
    promo = man.promotion(name, src_env.name)
    if promo is not None and promo.digest:
        return promo.digest
    raise UsageError(f"{name} has no image in {src_env.name}'s registry ({src_repo}) in the Release manifest",
                     f"run `invoke push --env {src_env.name} --service {name}` first")


def _gate_status(man: Manifest, name: str, gate: str) -> StrEnum | None:
    """The recorded status of a promote_requires gate for one service (None: never ran)."""
    rec = man.scanned(name) if gate == "scan" else man.smoked(name)
    return rec.status if rec is not None else None


def _gates(man: Manifest, names: list[str], dst: Environment) -> None:
    blocked: list[str] = []
    for name in names:
        # an infra image is scanned on its own; it is smoke-tested only inside its services' stack
        for gate in [g for g in dst.promote_requires if g == "scan" or not name.startswith(INFRA_PREFIX)]:
            status = _gate_status(man, name, gate)
            if status != PASSING[gate]:
                blocked.append(f"{name} ({gate}: {status or 'no result'})")
    if blocked:
        raise PolicyBlocked(f"promotion to {dst.name} refused: {', '.join(blocked)} — {dst.name} requires "
                            f"a passing {' and '.join(dst.promote_requires)}",
                            "run the missing gates (invoke scan / invoke smoke) on these images first")


def run_promote(cfg: Config, src: Environment, dst: Environment, man: Manifest, reporter: Reporter,
                services: list[str] | None = None, *, via: str | None = None,
                registries: RegistryClients | None = None) -> dict[str, dict[str, Any]]:
    """Copy each service's image by digest from src to dst and add dst's tags (the planning tag policy).

    man: the source environment's Release manifest (promotions are recorded in it, per service).
    via: "skopeo" (default when installed) or "registry-api" (same registry only: blob mounts).
    PolicyBlocked (exit 3) when dst's promote_requires gates did not pass; nothing is copied then.
    """
    log = reporter.info
    if src.name == dst.name:
        raise UsageError(f"cannot promote from {src.name} to itself", "name two different environments")
    names = [s.name for s in cfg.select(services)] if services else man.services()
    if not names:
        raise UsageError(f"the Release manifest {man.path} lists no service", "run `invoke build push` first")
    tags = env_tags(dst, man.version_facts())
    plans = []
    for name in names:  # every check before any copy
        svc = cfg.service(name)
        src_repo, dst_repo = src.repository(svc), dst.repository(svc)
        plans.append((name, src_repo, dst_repo, _source(man, name, src, src_repo)))
    # The infra images the target runs beside its release (none with a --service selection, as everywhere)
    infra_tags: dict[str, list[str]] = {}
    for image in [] if services else infra_images(cfg, dst):
        src_repo = src.repository_for(INFRA_REPOSITORY.format(name=image.name))
        plans.append((image.subject, src_repo, image.repository, _source(man, image.subject, src, src_repo)))
        pushed = man.pushed(image.subject)   # its content tag (`15-<12 hex>`), never a moving tag
        infra_tags[image.subject] = list(pushed.tags) if pushed is not None and pushed.tags else tags
    names = [n for n, _, _, _ in plans]
    _gates(man, names, dst)
    from pipeline.stages.sign import check_before_promotion, sign_promoted, signs
    from pipeline.trust.envkeys import signing_key

    regs = registries or RegistryClients(cfg, dst, src)
    check_before_promotion(cfg, src, man, [(n, a, d) for n, a, _, d in plans], dst=dst, registries=regs)
    dst_key = signing_key(cfg, dst) if signs(dst) else None   # the target's key: before anything is copied

    policy = regs.policy
    creds: dict[str, Credentials] = {}
    clients: dict[str, RegistryClient] = {}
    for address in {split_repository(r)[0] for _, a, b, _ in plans for r in (a, b)}:
        clients[address] = regs.client(address)
        if (c := clients[address].credentials) is not None:
            creds[address] = c
        with_retries(clients[address].ping, policy)
    cas = {a: c.cafile for a, c in clients.items() if c.cafile is not None}   # skopeo verifies with the same CAs
    via = via or ("skopeo" if skopeo.available() else "registry-api")
    if via not in ("skopeo", "registry-api"):
        raise UsageError(f"unknown copy method '{via}'", "use skopeo or registry-api")
    if via == "registry-api" and any(split_repository(a)[0] != split_repository(b)[0] for _, a, b, _ in plans):
        raise ToolMissing("promoting between two registries needs skopeo", skopeo.FIX)

    results: dict[str, dict[str, Any]] = {}
    for name, src_repo, dst_repo, digest in plans:
        tags = infra_tags.get(name) or env_tags(dst, man.version_facts())
        started = time.monotonic()
        s_addr, s_path = split_repository(src_repo)
        d_addr, d_path = split_repository(dst_repo)
        dclient = clients[d_addr]
        if with_retries(partial(clients[s_addr].head_manifest, s_path, digest), policy) is None:
            raise StageFailed(f"{src_repo}@{digest} is not in the registry any more",
                              f"push it again: invoke push --env {src.name} --service {name}")
        present = {t: with_retries(partial(dclient.head_manifest, d_path, t), policy) for t in tags}
        if all(r is not None and r.digest == digest for r in present.values()):
            method = "none"
        elif via == "skopeo":
            method = "skopeo"
            for tag in tags:   # transient failures (by the registry's error code) are retried by the policy
                with_retries(partial(skopeo.copy, f"{src_repo}@{digest}", f"{dst_repo}:{tag}", credentials=creds,
                                     timeout=cfg.registry.timeout_s, ca_files=cas), policy)
        else:
            method = "registry-api"
            with_retries(partial(copy_within_registry, dclient, s_path, digest, d_path, tags), policy)
        wrong = [t for t in tags if (r := dclient.head_manifest(d_path, t)) is None or r.digest != digest]
        if wrong:
            raise StageFailed(f"after the copy, {dst_repo} tags {wrong} do not point to {digest}",
                              "rerun the promote; check that nothing else writes these tags")
        res = {"status": PromotionStatus.UNCHANGED if method == "none" else PromotionStatus.PROMOTED,
               "from": src.name, "to": dst.name,
               "source": f"{src_repo}@{digest}", "repository": dst_repo, "digest": digest, "tags": tags,
               "method": method, "duration_s": round(time.monotonic() - started, 3), "at": now_iso()}
        if dst_key is not None:
            res["signature"] = sign_promoted(cfg, dst, man, name, dst_repo, digest, key=dst_key,
                                             registries=regs)
        if not name.startswith(INFRA_PREFIX):   # an infra image's promotion is in the target's manifest only
            man.record_promotion(name, dst.name, res)
        results[name] = res
        log(redact(f"  {name}: {res['status']} {dst_repo}@{digest} [{', '.join(tags)}] via {method}"))
    target = promoted_manifest(cfg, dst, man, results)
    log(f"promote {src.name} → {dst.name}: {len(results)} image(s), same digests, nothing built or pulled; "
        f"{target.path} holds them")
    return results


CARRIED = ("build", "scan", "smoke")   # facts about the digest itself, true in the target too


def promoted_manifest(cfg: Config, dst: Environment, man: Manifest, results: Mapping[str, Mapping[str, Any]]
                      ) -> Manifest:
    """The target's Release manifest after a promotion (replacing the one it had): the source's version facts,
    and for each promoted subject (service or `infra/<name>`) the source's build, scan and smoke records and its
    push record re-pointed at the target repository and tags (`promoted_from`: the source reference).
    `results`: run_promote's, subject → {"repository", "digest", "tags", "source", …}."""
    m = Manifest.new(manifest_path(cfg.state_dir, dst.name), env=dst.name, release_id=man.release_id,
                     version=man.version_facts())
    for name, res in results.items():
        raw = man.infra_result if name.startswith(INFRA_PREFIX) else man.stage_result
        slot = name.removeprefix(INFRA_PREFIX)
        if not name.startswith(INFRA_PREFIX):
            entry = man.service(name)
            m.set_service(name, repository=res["repository"], tags=list(res["tags"]),
                          input_digest=entry.get("input_digest", ""))
        for stage in CARRIED:
            if (rec := raw(slot, stage)) is not None:
                m.record(name, stage, {k: v for k, v in rec.items() if k != "at"})
        push = {k: v for k, v in (raw(slot, "push") or {}).items() if k != "at"}
        m.record(name, "push", {**push, "status": "pushed", "repository": res["repository"],
                                "digest": res["digest"], "tags_pushed": list(res["tags"]), "tags": list(res["tags"]),
                                "promoted_from": res["source"]})
    return m
