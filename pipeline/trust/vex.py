"""An OpenVEX document from the scan ignore file's justified entries, attached as `sha256-<hex>.vex`.

Each ignore entry that still ignores (a reason and an expiry date in the future: the same rule as the scan
gate, pipeline.gate.policy.ignore_file_findings) becomes one statement with status `not_affected`, its
reason as `impact_statement` (OpenVEX requires a justification or an impact statement for not_affected),
and products = the release's images as `pkg:oci` purls (an entry's package names go into `status_notes`:
the ignore file does not say which ecosystem a package belongs to, so no package purl is invented).
Trivy reads it with `--vex FILE`. Spec: openvex/spec `OPENVEX-SPEC.md` v0.2.0.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.core.config import Config, Environment
from pipeline.core.manifest import Manifest, atomic_write
from pipeline.core.release_images import recorded_subjects
from pipeline.core.vocab import now_iso
from pipeline.gate.policy import IgnoreEntry, ignore_file_findings, load_ignore_file
from pipeline.tools.registry_answers import digest_of
from pipeline.tools.registry_api import RegistryClient
from pipeline.trust.attach import Layer, attachment_tag, write_layers

OPENVEX_CONTEXT = "https://openvex.dev/ns/v0.2.0"
OPENVEX_MEDIA_TYPE = "application/openvex+json"


def oci_purl(repository: str, digest: str) -> str:
    """`127.0.0.1:5000/ns/app` + digest → `pkg:oci/app@sha256%3A…?repository_url=127.0.0.1:5000/ns/app`
    (purl-spec's oci type, the form Trivy matches container images by)."""
    name = repository.rsplit("/", 1)[-1]
    return f"pkg:oci/{name}@{quote(digest, safe='')}?repository_url={quote(repository, safe='/:')}"


def openvex_document(entries: list[IgnoreEntry], images: list[tuple[str, str]], *, author: str,
                     timestamp: str) -> dict[str, Any]:
    """The OpenVEX v0.2.0 document: one not_affected statement per entry, over `images` (repository, digest)."""
    products = [{"@id": oci_purl(repo, digest)} for repo, digest in images]
    statements = []
    for e in entries:
        st: dict[str, Any] = {"vulnerability": {"name": e.id}, "products": products, "status": "not_affected",
                              "impact_statement": e.reason}
        if e.packages:
            st["status_notes"] = "packages: " + ", ".join(e.packages)
        statements.append(st)
    body = json.dumps(statements, sort_keys=True).encode()
    return {"@context": OPENVEX_CONTEXT, "@id": "urn:" + digest_of(body),
            "author": author, "timestamp": timestamp, "version": 1, "statements": statements}


def justified_entries(cfg: Config, today: date | None = None) -> list[IgnoreEntry]:
    """The ignore file's entries that ignore today (reason and expiry present, not expired)."""
    path = cfg.scan.ignore_file
    if not path.is_file():
        return []
    _, valid = ignore_file_findings(load_ignore_file(path), today or date.today())
    return list(valid)


def vex_for_release(cfg: Config, man: Manifest, out_dir: Path, env: Environment | None = None) -> Path | None:
    """Write `<out_dir>/openvex.json` for the manifest's pushed images (its services and, with `env`, the infra
    images env runs: core/release_images.py recorded_subjects); None when no entry is justified."""
    entries = justified_entries(cfg)
    if not entries:
        return None
    images = [(p.repository, p.digest) for n in recorded_subjects(cfg, env, man)
              if (p := man.pushed(n)) and p.digest]
    doc = openvex_document(entries, images, author=cfg.signing.builder_id, timestamp=now_iso())
    out = out_dir / "openvex.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(doc, indent=2) + "\n")
    return out


def attach_vex(client: RegistryClient, repo: str, digest: str, vex: Path) -> str:
    """Put the OpenVEX file under `<repo>:sha256-<hex>.vex`; returns the tag."""
    tag = attachment_tag(digest, "vex")
    write_layers(client, repo, tag, [Layer(OPENVEX_MEDIA_TYPE, vex.read_bytes(),
                                           {"org.opencontainers.image.title": vex.name})])
    return tag
