"""The trust check in front of everything the deploy applies: no image reaches the cluster unless it is signed by
one of the environment's trusted keys for that exact digest (docs/signing.md).

What is checked is what is about to be applied, read where it is applied from, whatever its source:
  deploy      the chart rendered with the very values files `helm upgrade` gets (the manifest's digests and the
              ones kept from the deployed revision alike), and the local infra documents
  rollback    the manifests Helm stored for the target revision (`helm get manifest --revision N`), for
              `invoke rollback` and for every automatic rollback (after a failed deploy or verify, the recovery
              of a killed run): a target that does not verify is never rolled back to
The verdicts are pipeline.stages.verify_images.verify_applied's (PolicyBlocked, exit 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from pipeline.core.config import Config
from pipeline.core.errors import PolicyBlocked
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import Reporter
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import ImageChoice
from pipeline.stages.verify_images import images_in_manifests, verify_applied
from pipeline.tools import helm


def image_sources(rendered: Sequence[str], choices: Mapping[str, ImageChoice], kept_from: int) -> dict[str, str]:
    """Each rendered image → where it comes from: "<service> (Release manifest)", "<service> (kept from revision
    N)", or "rendered chart" for an image no service choice names (a values file's own). Pure."""
    by_ref = {c.ref: c for c in choices.values()}
    out: dict[str, str] = {}
    for ref in rendered:
        c = by_ref.get(ref)
        if c is None:
            out[ref] = "rendered chart"
        elif c.source == "deployed":
            out[ref] = f"{c.service}, kept from revision {kept_from}" if kept_from else f"{c.service}, kept"
        else:
            out[ref] = f"{c.service}, Release manifest"
    return out


def verify_infra(cfg: Config, rt: ReleaseTarget, manifest: Manifest | None, infra: Mapping[str, str],
                 reporter: Reporter) -> None:
    """Before the local infra is applied: each [infra.NAME] image of the documents (pipeline/local/infra.py) with
    `infra` (name → repository@sha256:…) verifies. PolicyBlocked (exit 3) otherwise."""
    from pipeline.local.infra import infra_documents

    if not infra:
        return
    refs = images_in_manifests(yaml.safe_dump_all(infra_documents(cfg, "verify", infra, namespace=rt.namespace)))
    names = {ref: name for name, ref in infra.items()}
    verify_applied(cfg, rt.env, manifest, {r: f"infra {names.get(r, '?')}" for r in refs}, reporter,
                   action=f"deploy to {rt.env.name}",
                   hint=f"sign the infra images for {rt.env.name}: `invoke push --env {rt.env.name}` then "
                        f"`invoke sign --env {rt.env.name}`")


def verify_chart(cfg: Config, rt: ReleaseTarget, manifest: Manifest | None, chart: Path, values_files: Sequence[Path],
                 choices: Mapping[str, ImageChoice], kept_from: int, reporter: Reporter) -> None:
    """Before `helm upgrade`: every image of the chart rendered (`helm template`) with `values_files`, exactly
    what Helm is handed, verifies. PolicyBlocked (exit 3) naming the first image that does not, with its source
    (the manifest, or kept from revision `kept_from` by a `--service` deploy)."""
    rendered = images_in_manifests(helm.template(chart, rt.release, values_files, namespace=rt.namespace))
    env = rt.env.name
    kept = {c.ref for c in choices.values() if c.source == "deployed"}   # attested for their own release's commit
    verify_applied(cfg, rt.env, manifest, image_sources(rendered, choices, kept_from), reporter, earlier=kept,
                   action=f"deploy to {env}",
                   hint=f"sign it for {env} (`invoke sign --env {env}` after a push); an image kept from the "
                        f"deployed revision: deploy every service from a signed release (`invoke deploy --env {env}` "
                        "without --service)")


def revision_documents(rt: ReleaseTarget, revision: int) -> str:
    """What a rollback to `revision` applies and runs: the manifests Helm stored for it and its hooks
    (multi-document YAML)."""
    return (helm.get_manifest(rt.kube, rt.release, revision=revision) + "\n---\n"
            + helm.get_hooks(rt.kube, rt.release, revision=revision))


def verify_revision(cfg: Config, rt: ReleaseTarget, revision: int, reporter: Reporter, *, action: str) -> None:
    """Before a rollback to `revision`: its pod templates (manifests and hooks) pass the Pod Security "restricted"
    profile as today's gate reads it (a revision deployed before a gate fix is not put back unchecked), and each
    of its images verifies (as an image of an earlier release: signed for its digest, provenance of any commit).
    PolicyBlocked (exit 3) otherwise."""
    from pipeline.gate import pod_security

    text = revision_documents(rt, revision)
    pod_security.enforce_restricted(text, where=f"revision {revision} of {rt.release} ({action})")
    refs = images_in_manifests(text)
    verify_applied(cfg, rt.env, None, {r: f"revision {revision}" for r in refs}, reporter, action=action,
                   hint=f"roll back to a revision whose images verify (`helm history {rt.release} -n "
                        f"{rt.namespace}`), or sign them for {rt.env.name}")


def revision_problem(cfg: Config, rt: ReleaseTarget, revision: int, reporter: Reporter) -> str:
    """"" when a rollback to `revision` may run (its images verify, or there is no revision: 0), else the one line
    saying why not (the automatic rollbacks' check: recovery.py)."""
    if not revision:
        return ""
    try:
        verify_revision(cfg, rt, revision, reporter, action=f"the rollback to revision {revision}")
    except PolicyBlocked as exc:
        return exc.message
    return ""
