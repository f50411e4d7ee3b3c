"""SLSA v1 provenance of one image, as an in-toto Statement v1 in a DSSE envelope.

Statement (https://in-toto.io/Statement/v1, spec: in-toto/attestation `spec/v1/statement.md`):
    subject: [{"name": "<registry>/<repo>", "digest": {"sha256": "<hex of the image manifest digest>"}}]
    predicateType: https://slsa.dev/provenance/v1 (spec: slsa.dev/spec/v1.0/provenance)
    predicate.buildDefinition: buildType, externalParameters (source, revision: the commit the image was
        built from, dockerfile, buildArgs, and for a multi-platform image `platforms`: the child's platform, or
        every platform of the index), internalParameters (inputDigest, commit), resolvedDependencies (the git
        commit the image was built from with its tree state, the Dockerfile by sha256, the build context by
        the sha256 of its file list, each base image by digest)
    predicate.runDetails: builder.id and builder.version (builder kind, docker CLI, engine), metadata
        (invocationId, startedOn/finishedOn: the run that BUILT the image), byproducts (a reused image: one
        `reuse` descriptor naming the run, commit and time that reused it)

Why the reuse is a byproduct, not metadata: SLSA v1 (slsa.dev/provenance/v1) defines `runDetails.metadata` as
"metadata about this particular execution of the build" (invocationId, startedOn, finishedOn), which for a
reused image is the earlier build; `byproducts` are resource descriptors of things "not considered the output
of the build but that might be needed during debugging or incident response", which the reuse is (which run
released this digest, at which commit). The build's facts stay those of the build that produced the bytes.
The envelope (DSSE v1, securesystemslib's reference implementation) signs the statement with the
environment's ECDSA key; payloadType application/vnd.in-toto+json.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, Key, SSlibKey  # type: ignore[attr-defined]

from pipeline.tools.registry_api import RegistryClient
from pipeline.trust.attach import Layer, attachment_tag, read_layers, write_layers

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
PREDICATE_ANNOTATION = "predicateType"
REUSE_BYPRODUCT = "reuse"   # runDetails.byproducts[].name of the run that reused the image (see the docstring)


@dataclass(frozen=True)
class BuildFacts:
    """What went into one image, from the Release manifest and the config (no engine or git call here).

    commit: full git SHA; dirty: the tree had uncommitted changes; base_images: reference → digest
    ("sha256:…", the image ID when a base only exists locally); dockerfile_sha256: hex of the file's bytes.
    """

    repository: str              # registry/namespace/repo
    digest: str                  # the pushed image manifest digest
    commit: str
    dirty: bool
    source_uri: str              # e.g. git+https://github.com/veza/veza-platform@refs/heads/main
    dockerfile: str              # path relative to the repository root
    dockerfile_sha256: str
    input_digest: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    base_images: Mapping[str, str] = field(default_factory=dict)
    builder_id: str = ""
    build_type: str = ""
    invocation_id: str = ""
    started_on: str = ""
    finished_on: str = ""
    platforms: tuple[str, ...] = ()   # multi-platform: the child's platform, or every platform of the index
    builder_version: Mapping[str, str] = field(default_factory=dict)   # component → version (SLSA builder.version)
    context: str = ""                 # the build context's path relative to the repository root
    context_sha256: str = ""          # hex sha256 of the context's file list (path → mode:sha256)
    reuse_run: str = ""               # a reused image: the run that reused it (else "")
    reuse_commit: str = ""            # ... at this commit
    reused_on: str = ""               # ... at this time (RFC 3339 UTC)
    materials: tuple[Mapping[str, Any], ...] = ()   # more resolvedDependencies (SLSA ResourceDescriptors), as given


def _hex(digest: str) -> dict[str, str]:
    algo, _, value = digest.partition(":")
    return {algo: value} if value else {"sha256": digest}


def provenance_statement(f: BuildFacts) -> dict[str, Any]:
    """The in-toto Statement v1 with an SLSA v1 provenance predicate for one image (a JSON-ready dict).

    Empty facts are left out (no context digest, no builder version, no reuse: an image built by this run; no
    Dockerfile: an image pulled by digest, whose `materials` name it; no commit: an infra image, whose recipe or
    pinned upstream is its source, and the release that runs it the reuse byproduct). `materials` follow the other
    dependencies.
    """
    deps: list[dict[str, Any]] = [   # no commit: an infra image, described by its recipe or its pinned upstream
        {"uri": f.source_uri, "digest": {"gitCommit": f.commit},
         "annotations": {"treeState": "dirty" if f.dirty else "clean"}},
    ] if f.commit else []
    if f.dockerfile:   # none for an image that was pulled, not built (its material says where from)
        deps.append({"uri": f.dockerfile, "name": "Dockerfile", "digest": {"sha256": f.dockerfile_sha256}})
    if f.context_sha256:
        deps.append({"uri": f.context or ".", "name": "build-context", "digest": {"sha256": f.context_sha256}})
    for ref, digest in sorted(f.base_images.items()):
        deps.append({"uri": f"docker-image://{ref}", "name": "base-image", "digest": _hex(digest)})
    deps += [dict(m) for m in f.materials]
    metadata = {k: v for k, v in (("invocationId", f.invocation_id), ("startedOn", f.started_on),
                                  ("finishedOn", f.finished_on)) if v}
    external: dict[str, Any] = {"source": f.source_uri, "revision": f.commit, "dockerfile": f.dockerfile,
                                "buildArgs": dict(sorted(f.build_args.items()))}
    if f.platforms:
        external["platforms"] = list(f.platforms)
    builder: dict[str, Any] = {"id": f.builder_id}
    if f.builder_version:
        builder["version"] = dict(sorted(f.builder_version.items()))
    run_details: dict[str, Any] = {"builder": builder, "metadata": metadata}
    if f.reuse_run or f.reuse_commit:
        run_details["byproducts"] = [{
            "name": REUSE_BYPRODUCT, "digest": {"gitCommit": f.reuse_commit},
            "annotations": {k: v for k, v in (("invocationId", f.reuse_run), ("reusedOn", f.reused_on)) if v}}]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f.repository, "digest": _hex(f.digest)}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": f.build_type,
                "externalParameters": external,
                "internalParameters": {"inputDigest": f.input_digest, "commit": f.commit},
                "resolvedDependencies": deps,
            },
            "runDetails": run_details,
        },
    }


def _sslib_key(key: ec.EllipticCurvePublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(key)


def sign_statement(statement: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The DSSE envelope (as a dict: payload, payloadType, signatures) of `statement` signed by `key`."""
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
    env = Envelope(payload, PAYLOAD_TYPE, {})
    env.sign(CryptoSigner(key, _sslib_key(key.public_key())))
    return env.to_dict()


def envelope_keyids(envelope: Mapping[str, Any]) -> set[str]:
    """The keyids a DSSE envelope (as a dict) names in its signatures (securesystemslib's keyid of each signer's
    public key: the same key always gives the same id). Unauthenticated: only used to decide what to replace."""
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list):
        return set()
    return {str(s["keyid"]) for s in sigs if isinstance(s, dict) and s.get("keyid")}


def attach_provenance(client: RegistryClient, repo: str, digest: str, envelope: dict[str, Any]) -> str:
    """Add the envelope under `<repo>:sha256-<hex>.att` (cosign's attestation layout); returns the tag.

    Attestations append per digest, as signatures do (cosign `attest` appends too): the envelopes of other keys
    stay, so two environments that release one digest with their own keys each keep theirs, and each verifies
    with its own key (check_provenance tries every envelope). An envelope by the same key (same keyid) is
    replaced: one provenance per (digest, key), the latest, so re-releases of one digest do not grow the tag.
    """
    tag = attachment_tag(digest, "att")
    data = json.dumps(envelope, separators=(",", ":")).encode()
    mine = envelope_keyids(envelope)
    kept: list[Layer] = []
    for layer in read_layers(client, repo, tag) or []:
        if layer.annotations.get(PREDICATE_ANNOTATION) == SLSA_PROVENANCE_V1:
            try:
                other = json.loads(layer.data)
            except ValueError:
                other = None
            if isinstance(other, dict) and envelope_keyids(other) & mine:
                continue   # this key's earlier provenance of the digest: replaced by the new one
        kept.append(layer)   # other keys', other predicates', anything else: kept as found
    write_layers(client, repo, tag,
                 [*kept, Layer(DSSE_MEDIA_TYPE, data, {PREDICATE_ANNOTATION: SLSA_PROVENANCE_V1})])
    return tag


@dataclass(frozen=True)
class ProvenanceCheck:
    """`ok`, else `problem` (one line); `statement`: the payload, whenever a trusted key signed the envelope."""

    ok: bool
    problem: str = ""
    statement: dict[str, Any] | None = None


def check_envelope(envelope: dict[str, Any], trusted: list[ec.EllipticCurvePublicKey], *, digest: str,
                   commit: str | None) -> ProvenanceCheck:
    """Is this DSSE envelope signed by a trusted key, SLSA v1, about `digest`, built from `commit` or reused at it
    (a `reuse` byproduct naming `commit`: the image was built at an earlier commit with the same inputs)?
    `commit` None: any commit (an image of an earlier release: kept by a deploy, a rollback's target)."""
    try:
        env = Envelope.from_dict(copy.deepcopy(envelope))   # from_dict consumes its argument
    except (KeyError, TypeError, ValueError, AttributeError):
        return ProvenanceCheck(False, "provenance is not a DSSE envelope")
    if env.payload_type != PAYLOAD_TYPE:
        return ProvenanceCheck(False, f"provenance payload type is {env.payload_type!r}")
    keys: list[Key] = [_sslib_key(k) for k in trusted]
    try:
        env.verify(keys, 1)
    except VerificationError:
        return ProvenanceCheck(False, "provenance signature does not verify with a trusted key "
                                      "(tampered, or signed by another key)")
    try:
        st = json.loads(env.payload)
    except ValueError:
        return ProvenanceCheck(False, "provenance payload is not JSON")
    if st.get("_type") != STATEMENT_TYPE or st.get("predicateType") != SLSA_PROVENANCE_V1:
        return ProvenanceCheck(False, "provenance is not an in-toto v1 statement with an SLSA v1 predicate", st)
    subjects = [s.get("digest", {}) for s in st.get("subject") or []]
    if _hex(digest) not in subjects:
        return ProvenanceCheck(False, f"provenance subject is not {digest}", st)
    deps = (st.get("predicate") or {}).get("buildDefinition", {}).get("resolvedDependencies") or []
    commits = {str(d.get("digest", {}).get("gitCommit")) for d in deps if d.get("digest", {}).get("gitCommit")}
    reused = {str((b.get("digest") or {}).get("gitCommit")) for b in
              (st.get("predicate") or {}).get("runDetails", {}).get("byproducts") or []
              if isinstance(b, dict) and b.get("name") == REUSE_BYPRODUCT}
    if commit is not None and commit not in commits | reused:
        found = ", ".join(sorted(commits)) or "none"
        return ProvenanceCheck(False, f"provenance commit ({found[:12]}) is not the release's commit {commit[:12]}", st)
    return ProvenanceCheck(True, "", st)


def check_provenance(client: RegistryClient, repo: str, digest: str, trusted: list[ec.EllipticCurvePublicKey],
                     *, commit: str | None) -> ProvenanceCheck:
    """Read `<repo>:sha256-<hex>.att` from the registry and check its SLSA provenance (see check_envelope)."""
    layers = read_layers(client, repo, attachment_tag(digest, "att"))
    envelopes = [layer for layer in layers or [] if layer.media_type == DSSE_MEDIA_TYPE
                 and layer.annotations.get(PREDICATE_ANNOTATION) == SLSA_PROVENANCE_V1]
    if not envelopes:
        return ProvenanceCheck(False, "no provenance (nothing under the .att tag)")
    problems: list[ProvenanceCheck] = []
    for layer in envelopes:
        try:
            doc = json.loads(layer.data)
        except ValueError:
            problems.append(ProvenanceCheck(False, "provenance is not JSON"))
            continue
        found = check_envelope(doc, trusted, digest=digest, commit=commit)
        if found.ok:
            return found
        problems.append(found)
    # Other keys' envelopes sit beside ours (attach_provenance appends): say what is wrong with one a trusted key
    # signed when there is one, rather than "signed by another key" about a neighbour's.
    return next((p for p in problems if p.statement is not None), None) or problems[-1]
