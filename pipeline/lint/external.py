"""The other checkers' findings, in LintFinding form: hadolint, `trivy config`, schema validation.

- hadolint's own parser predates some BuildKit syntax (heredocs, some flags): when it cannot parse a file
  (DL1000) that BuildKit's parser accepts, that is one LOW HADOLINT-PARSE finding (hadolint's checks did
  not run on that file), never a blocking error.
- `trivy config` runs once over a staging copy of every file and rendering; its lines are mapped back
  (rendered chart documents to their template file and line) and its line spans are returned so the
  same problem found by a VZ rule becomes one finding (findings.merge_same_problem).
- Schemas: one finding per problem for all the Kubernetes versions that reject it (rule SCHEMA, the
  versions in the message); nulls are dropped first, as the API server treats a null optional field as unset.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.vocab import SEVERITY_RANK as RANK
from pipeline.lint.charts import Rendered, RenderedDoc, to_template
from pipeline.lint.findings import LintFinding
from pipeline.lint.rules import _line

HADOLINT_SEVERITY = {"error": "HIGH", "warning": "MEDIUM", "info": "LOW", "style": "LOW"}
Spans = dict[tuple[str, str, int], int]
# a Kubernetes object to validate: (object, file, where its lines go: None = as loaded, else a rendered doc)
SchemaJob = tuple[Any, str, RenderedDoc | None]


def hadolint_findings(dockerfiles: list[Path], buildkit_rejects: set[str]) -> list[LintFinding]:
    """hadolint's findings; `buildkit_rejects` are the files BuildKit's parser refused (reported elsewhere).

    A file with heredocs is given to hadolint with the heredocs replaced by stand-ins, lines kept in place
    (dockerfile.without_heredoc_bodies), so its checks still run on the rest of the file.
    """
    from pipeline.lint.dockerfile import without_heredoc_bodies
    from pipeline.tools import hadolint

    out = []
    with tempfile.TemporaryDirectory(prefix="veza-hadolint-") as tmp:
        given: list[Path] = []
        origin: dict[str, str] = {}
        for i, df in enumerate(dockerfiles):
            stand_in = None if str(df) in buildkit_rejects else without_heredoc_bodies(df.read_text(errors="replace"))
            if stand_in is None:
                given.append(df)
                continue
            copy = Path(tmp) / str(i) / df.name
            copy.parent.mkdir()
            copy.write_text(stand_in)
            given.append(copy)
            origin[str(copy)] = str(df)
        for d in hadolint.lint(given):
            code, line = str(d.get("code", "DL")), int(d.get("line") or 0)
            file = origin.get(str(d.get("file", "")), str(d.get("file", "")))
            message = str(d.get("message", "")).replace("\n", " ")
            if code == "DL1000":
                if file in buildkit_rejects:
                    continue
                out.append(LintFinding("HADOLINT-PARSE", "LOW", file, line,
                                       f"hadolint cannot parse this file ({message}), though BuildKit can: "
                                       "hadolint's checks did not run on it", "nothing to fix in the file; the VZ "
                                       "rules and trivy read it with BuildKit's parser", "hadolint"))
                continue
            out.append(LintFinding(code, HADOLINT_SEVERITY.get(str(d.get("level", "warning")), "MEDIUM"), file,
                                   line, message, f"https://github.com/hadolint/hadolint/wiki/{code}", "hadolint"))
    return out


def _sev(value: Any) -> str:
    v = str(value or "UNKNOWN").upper()
    return v if v in RANK else "UNKNOWN"


def trivy_config_findings(files: list[Path], renders: list[Rendered],
                          log: Callable[[str], None]) -> tuple[list[LintFinding], Spans]:
    """One `trivy config` run over a staging copy of every file (and every rendering), mapped back."""
    from pipeline.tools import trivy

    spans: Spans = {}
    if not files and not renders:
        return [], spans
    out: list[LintFinding] = []
    with tempfile.TemporaryDirectory(prefix="veza-lint-") as tmp:
        stage = Path(tmp) / "stage"
        origin: dict[str, tuple[str, RenderedDoc | None]] = {}
        for i, f in enumerate(files):
            rel = f"f{i}/{f.name}"
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, stage / rel)
            origin[rel] = (str(f), None)
        for i, r in enumerate(renders):
            for j, doc in enumerate(r.docs):
                rel = f"r{i}/d{j}.yaml"
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_text(doc.body)
                origin[rel] = (str(doc.template), doc)
        data = trivy.scan_config(stage, Path(tmp) / "report.json", cache_dir=trivy.default_cache_dir())
        for res in data.get("Results") or []:
            target = str(res.get("Target", ""))
            where, rendered = origin.get(target, (target, None))
            for m in res.get("Misconfigurations") or []:
                if str(m.get("Status", "FAIL")).upper() != "FAIL":
                    continue
                cause = m.get("CauseMetadata") or {}
                start, end = int(cause.get("StartLine") or 0), int(cause.get("EndLine") or 0)
                if rendered is not None:
                    where, start = to_template(rendered, start)
                    end = to_template(rendered, end)[1] if end else start
                rule = str(m.get("ID") or m.get("AVDID"))
                spans[("trivy", where, start)] = max(spans.get(("trivy", where, start), 0), end)
                out.append(LintFinding(rule, _sev(m.get("Severity")), where, start,
                                       str(m.get("Message") or m.get("Title")), str(m.get("Resolution") or ""),
                                       "trivy"))
    return out, spans


def drop_nulls(obj: Any) -> Any:
    """The object as the API server decodes it: map entries whose value is null are unset; dates as strings."""
    if isinstance(obj, dict):
        return {str(k): drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [drop_nulls(v) for v in obj]
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def line_of(doc: Any, path: tuple[str | int, ...]) -> int:
    """The line of the deepest node along `path` that the YAML loader recorded."""
    line, node = _line(doc), doc
    for step in path:
        if isinstance(node, dict) and step in node:
            line, node = _line(node, step) or line, node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            lines = getattr(node, "item_lines", [])
            line, node = (lines[step] if step < len(lines) else line), node[step]
        else:
            break
    return line


def schema_findings(jobs: list[tuple[SchemaJob, str]]) -> list[LintFinding]:
    """Schema violations of each (object, Kubernetes version): one finding per problem, versions merged."""
    from pipeline.lint import k8s_schema

    merged: dict[tuple[str, int, str], list[str]] = {}
    out: list[LintFinding] = []
    unavailable: set[str] = set()
    for (doc, file, rendered), kv in jobs:
        if kv in unavailable:
            continue
        try:
            errors = k8s_schema.validate(drop_nulls(doc), kv)
        except k8s_schema.SchemaUnavailable as exc:
            unavailable.add(kv)
            out.append(LintFinding("SCHEMA", "LOW", file, 0, str(exc), "run `invoke lint` once with PyPI reachable",
                                   "kubernetes-validate"))
            continue
        meta = doc.get("metadata")
        what = f"{doc.get('kind')}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"
        for e in errors:
            line = line_of(doc, e.path)
            where = file
            if rendered is not None:
                where, line = to_template(rendered, line)
            message = str(e).replace(", 'null'", "")   # newer schemas spell optional fields as nullable
            versions = merged.setdefault((where, line, f"{what}: {message}"), [])
            short = ".".join(kv.split(".")[:2])
            if short not in versions:
                versions.append(short)
    for (where, line, message), versions in merged.items():
        out.append(LintFinding("SCHEMA", "HIGH", where, line, f"{message} (Kubernetes {', '.join(versions)})",
                               f"make the object valid for Kubernetes {', '.join(versions)}", "kubernetes-validate"))
    return out


ZIZMOR_SEVERITY = {"high": "HIGH", "medium": "MEDIUM", "low": "LOW", "informational": "UNKNOWN"}


def is_workflow(path: Path) -> bool:
    """A GitHub Actions workflow: a YAML file directly in `.github/workflows/` (where GitHub reads them)."""
    return path.suffix in (".yml", ".yaml") and path.parent.name == "workflows" and path.parent.parent.name == ".github"


def zizmor_findings(workflows: list[Path]) -> list[LintFinding]:
    """zizmor's findings on GitHub Actions workflows (run offline), one per finding at its primary location.

    Severities are zizmor's (docs.zizmor.sh, "audits"); informational becomes UNKNOWN, below every threshold.
    """
    from pipeline.tools import zizmor

    out = []
    for z in zizmor.audit(workflows):
        locs = [x for x in z.get("locations") or [] if isinstance(x, dict)]
        loc = next((x for x in locs if (x.get("symbolic") or {}).get("kind") == "Primary"), locs[0] if locs else {})
        sym, concrete = loc.get("symbolic") or {}, loc.get("concrete") or {}
        file = str(((sym.get("key") or {}).get("Local") or {}).get("verbatim_path", ""))
        row = ((concrete.get("location") or {}).get("start_point") or {}).get("row")
        note = str(sym.get("annotation") or "")
        message = str(z.get("desc", "")) + (f": {note}" if note else "")
        fixes = "; ".join(str(f.get("title")) for f in z.get("fixes") or [] if isinstance(f, dict) and f.get("title"))
        sev = str((z.get("determinations") or {}).get("severity", "")).lower()
        out.append(LintFinding(f"zizmor/{z.get('ident', '?')}", ZIZMOR_SEVERITY.get(sev, "UNKNOWN"), file,
                               int(row) + 1 if isinstance(row, int) else 0, message,
                               (f"{fixes} ({z.get('url', '')})" if fixes else str(z.get("url", ""))), "zizmor"))
    return out
