"""`invoke lint`: Dockerfiles, compose files, Kubernetes manifests and Helm charts, with every checker.

- the seed guide's pitfalls (pipeline/lint/rules.py: VZ001-VZ010, errors that block at the default threshold)
- hadolint on Dockerfiles
- `trivy config` on Dockerfiles, compose files, Kubernetes manifests and the rendered Helm charts (one run)
- `helm lint --strict` and `helm template` per values file, the rendered objects checked like manifests
- strict schema validation of every Kubernetes object for 1.20 (the local cluster) and a current version

`--path` takes any files or directories (another repository too). Exit 3 when findings at or above the
threshold exist (default: the prod environment's scan threshold), 0 otherwise; `--format json`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PipelineError, PolicyBlocked, UsageError
from pipeline.core.vocab import SEVERITIES
from pipeline.core.vocab import SEVERITY_RANK as RANK
from pipeline.gate.policy import severity
from pipeline.lint import rules
from pipeline.lint.rules import LintFinding

KUBE_VERSIONS = ("1.20.0", "1.31.0")   # the local cluster's, and a current one (kubectl's)
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", ".pipeline", ".tools", "__pycache__", ".mypy_cache",
             ".ruff_cache", ".pytest_cache", "vendor", "target"}
HADOLINT_SEVERITY = {"error": "HIGH", "warning": "MEDIUM", "info": "LOW", "style": "LOW"}
Log = Callable[[str], None]


@dataclass
class Inputs:
    dockerfiles: list[Path] = field(default_factory=list)
    yamls: list[Path] = field(default_factory=list)
    charts: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class LintReport:
    threshold: str
    findings: tuple[LintFinding, ...]
    checked: dict[str, int]

    @property
    def blocking(self) -> tuple[LintFinding, ...]:
        return tuple(f for f in self.findings if RANK[f.severity] >= RANK[self.threshold])

    @property
    def status(self) -> str:
        return "blocked" if self.blocking else "pass"

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in reversed(SEVERITIES)}
        for f in self.findings:
            c[f.severity] += 1
        return c

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "threshold": self.threshold, "counts": self.counts(),
                "checked": self.checked, "blocking_count": len(self.blocking),
                "findings": [f.to_dict() for f in self.findings]}


# ---------------------------------------------------------------- entry point

def run_lint(paths: list[str] | None, threshold: str | None = None, fmt: str = "text", *,
             kube_versions: tuple[str, ...] = KUBE_VERSIONS, log: Log | None = None) -> LintReport:
    from pipeline.core.paths import ROOT

    if fmt not in ("text", "json"):
        raise UsageError(f"unknown format '{fmt}'", "use --format text or --format json")
    level = severity(threshold) if threshold else _default_threshold()
    say: Log = log or ((lambda s: print(s, file=sys.stderr)) if fmt == "json" else print)
    if paths:
        targets = [Path(p) for p in paths]
    else:   # the project's own: those of these directories that exist
        targets = [ROOT / d for d in ("dockerfiles", "compose", "k8s", "helm") if (ROOT / d).exists()]
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        raise UsageError(f"lint: no such file or directory: {', '.join(missing)}", "pass existing paths to --path")
    inputs = collect([p for p in targets if p.exists()])
    report = lint_inputs(inputs, level, kube_versions, say)
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if report.blocking:
        raise PolicyBlocked(f"lint: {len(report.blocking)} finding(s) at or above {level}",
                            "fix them (each finding names its fix) or lower --threshold")
    return report


def _default_threshold() -> str:
    try:
        from pipeline.core.config import load_config

        cfg = load_config(check_files=False)
        return cfg.environments["prod"].scan_threshold if "prod" in cfg.environments else "HIGH"
    except PipelineError:
        return "HIGH"


# ---------------------------------------------------------------- collecting files

def is_dockerfile(p: Path) -> bool:
    n = p.name.lower()
    return n == "dockerfile" or n.endswith(".dockerfile") or n.startswith("dockerfile.")


def collect(targets: Iterable[Path]) -> Inputs:
    inputs = Inputs()
    seen: set[Path] = set()

    def add_file(p: Path) -> None:
        rp = p.resolve()
        if rp in seen:
            return
        seen.add(rp)
        if is_dockerfile(p):
            inputs.dockerfiles.append(p)
        elif p.suffix in (".yml", ".yaml"):
            inputs.yamls.append(p)

    for t in targets:
        if t.is_file():
            if t.name == "Chart.yaml":
                inputs.charts.append(t.parent)
            else:
                add_file(t)
            continue
        for dirpath, dirnames, filenames in os.walk(t):
            d = Path(dirpath)
            if (d / "Chart.yaml").is_file():
                inputs.charts.append(d)
                dirnames[:] = []          # a chart is linted rendered, not file by file
                continue
            dirnames[:] = sorted(x for x in dirnames if x not in SKIP_DIRS)
            for f in sorted(filenames):
                add_file(d / f)
    return inputs


# ---------------------------------------------------------------- the checks

@dataclass
class Rendered:
    chart: Path
    values: str              # the values file this rendering used (label)
    kube_version: str
    docs: list[tuple[Any, str, int]]   # (object, label naming its template, line offset: see split_rendered)
    texts: list[str]                   # each rendered document's text, from its apiVersion line on


def lint_inputs(inputs: Inputs, threshold: str, kube_versions: tuple[str, ...], log: Log) -> LintReport:
    found: list[LintFinding] = []
    checked = {"dockerfiles": len(inputs.dockerfiles), "yaml_files": len(inputs.yamls), "charts": len(inputs.charts),
               "kubernetes_objects": 0}
    k8s_objects: list[tuple[Any, str, int]] = []   # (object, file label, line offset) for schema checks
    yaml_for_trivy: list[Path] = []
    for df in inputs.dockerfiles:
        found += rules.dockerfile_rules(df.read_text(errors="replace"), str(df))
    for y in inputs.yamls:
        try:
            docs = rules.load_yaml_docs(y.read_text(errors="replace"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            found.append(LintFinding("YAML", "HIGH", str(y), (mark.line + 1) if mark else 0,
                                     f"invalid YAML: {str(exc).splitlines()[0]}", "fix the YAML syntax", "yaml"))
            continue
        relevant = False
        for doc in docs:
            if rules.is_compose(doc):
                relevant = True
                found += rules.compose_rules(doc, str(y))
            elif rules.is_k8s(doc):
                relevant = True
                found += rules.k8s_rules(doc, str(y))
                k8s_objects.append((doc, str(y), 0))
        if relevant:
            yaml_for_trivy.append(y)
    renders: list[Rendered] = []
    for chart in inputs.charts:
        chart_findings, chart_renders = lint_chart(chart, kube_versions, log)
        found += chart_findings
        renders += chart_renders
    current = kube_versions[-1] if kube_versions else ""
    for r in renders:
        if r.kube_version == current:   # pitfalls once per values file (not once per Kubernetes version)
            for doc, label, offset in r.docs:
                found += rules.k8s_rules(doc, label, offset)
    checked["kubernetes_objects"] = len(k8s_objects) + sum(len(r.docs) for r in renders if r.kube_version == current)
    found += schema_findings(k8s_objects, renders, kube_versions)
    found += hadolint_findings(inputs.dockerfiles)
    found += trivy_config_findings(inputs.dockerfiles + yaml_for_trivy,
                                   [r for r in renders if r.kube_version == current], log)
    unique = sorted(set(found), key=lambda f: (f.file, f.line, -RANK[f.severity], f.rule, f.message))
    return LintReport(threshold, tuple(unique), checked)


def hadolint_findings(dockerfiles: list[Path]) -> list[LintFinding]:
    from pipeline.tools import hadolint

    out = []
    for d in hadolint.lint(dockerfiles):
        level = str(d.get("level", "warning"))
        out.append(LintFinding(str(d.get("code", "DL")), HADOLINT_SEVERITY.get(level, "MEDIUM"), str(d.get("file", "")),
                               int(d.get("line") or 0), str(d.get("message", "")),
                               f"https://github.com/hadolint/hadolint/wiki/{d.get('code', '')}", "hadolint"))
    return out


def _values_sets(chart: Path) -> list[tuple[str, list[Path]]]:
    """values.yaml alone, then each values-<env>.yaml; the chart's ci/*-values.yaml (test inputs) apply to all."""
    ci = sorted((chart / "ci").glob("*values*.yaml")) if (chart / "ci").is_dir() else []
    sets: list[tuple[str, list[Path]]] = [("values.yaml", ci)]
    for v in sorted(chart.glob("values-*.yaml")):
        sets.append((v.name, [v, *ci]))
    return sets


SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)


def split_rendered(text: str, chart: Path, values: str) -> tuple[list[tuple[Any, str, int]], list[str]]:
    """Rendered documents, each labelled with its template, object and values file.

    Lines count within the rendered document, line 1 being the line after its `# Source:` comment
    (usually the template's first line): a template that loops renders several documents.
    """
    out: list[tuple[Any, str, int]] = []
    texts: list[str] = []
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        m = SOURCE.search(chunk)
        body = chunk[m.end() + 1:] if m else chunk.lstrip("\n")
        try:
            docs = rules.load_yaml_docs(body)
        except yaml.YAMLError:
            docs = []
        for doc in docs:
            if rules.is_k8s(doc):
                src = m.group(1).split("/", 1)[-1] if m else "?"
                what = f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
                out.append((doc, f"{chart}/{src} [rendered with {values}: {what}]", 0))
                texts.append(body)
    return out, texts


def lint_chart(chart: Path, kube_versions: tuple[str, ...], log: Log) -> tuple[list[LintFinding], list[Rendered]]:
    from pipeline.tools import helm

    found: list[LintFinding] = []
    renders: list[Rendered] = []
    for label, files in _values_sets(chart):
        res = helm.lint(chart, files, strict=True, kube_version=kube_versions[-1] if kube_versions else "")
        for line in (res.stdout + "\n" + res.stderr).splitlines():
            m = re.match(r"^\[(ERROR|WARNING|INFO)\]\s*(.*)$", line.strip())
            if m and m.group(1) != "INFO":
                found.append(LintFinding("HELM-LINT", "HIGH", f"{chart} [{label}]", 0, m.group(2),
                                         "fix the chart (helm lint --strict treats warnings as errors)", "helm"))
        if not res.ok and not any(f.file == f"{chart} [{label}]" for f in found):
            tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:]
            found.append(LintFinding("HELM-LINT", "HIGH", f"{chart} [{label}]", 0,
                                     f"helm lint --strict failed: {' '.join(tail)}", "fix the chart", "helm"))
        for kv in kube_versions:
            try:
                text = helm.template(chart, "lint", files, namespace="lint", kube_version=kv)
            except PipelineError as exc:
                found.append(LintFinding("HELM-TEMPLATE", "HIGH", f"{chart} [{label}]", 0,
                                         f"helm template (Kubernetes {kv}) failed: {exc.message}",
                                         "fix the template or the values", "helm"))
                continue
            docs, texts = split_rendered(text, chart, label)
            renders.append(Rendered(chart, label, kv, docs, texts))
    return found, renders


def schema_findings(objects: list[tuple[Any, str, int]], renders: list[Rendered],
                    kube_versions: tuple[str, ...]) -> list[LintFinding]:
    from pipeline.lint import k8s_schema

    out: list[LintFinding] = []
    jobs = [(doc, label, off, kv) for doc, label, off in objects for kv in kube_versions]
    jobs += [(doc, label, off, r.kube_version) for r in renders for doc, label, off in r.docs]
    unavailable: set[str] = set()
    for doc, label, off, kv in jobs:
        if kv in unavailable:
            continue
        try:
            errors = k8s_schema.validate(_plain(doc), kv)
        except k8s_schema.SchemaUnavailable as exc:
            unavailable.add(kv)
            out.append(LintFinding("SCHEMA", "LOW", label, 0, str(exc), "run `invoke lint` once with PyPI reachable",
                                   "kubernetes-validate"))
            continue
        what = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
        for e in errors:
            out.append(LintFinding(f"SCHEMA-{'.'.join(kv.split('.')[:2])}", "HIGH", label, line_of(doc, e.path) + off,
                                   f"{what}: {e}", f"make the object valid for Kubernetes {kv}",
                                   "kubernetes-validate"))
    return out


def line_of(doc: Any, path: tuple[str | int, ...]) -> int:
    """The line of the deepest node along `path` that the YAML loader recorded."""
    line, node = rules._line(doc), doc
    for step in path:
        if isinstance(node, dict) and step in node:
            line, node = rules._line(node, step) or line, node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            lines = getattr(node, "item_lines", [])
            line, node = (lines[step] if step < len(lines) else line), node[step]
        else:
            break
    return line


def _plain(obj: Any) -> Any:
    """YMap/YList → plain dicts/lists (JSON-schema validators want exact types); dates as strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def trivy_config_findings(files: list[Path], renders: list[Rendered], log: Log) -> list[LintFinding]:
    """One `trivy config` run over a staging copy of every file (and every rendering), mapped back."""
    from pipeline.tools import trivy

    if not files and not renders:
        return []
    out: list[LintFinding] = []
    with tempfile.TemporaryDirectory(prefix="veza-lint-") as tmp:
        stage = Path(tmp) / "stage"
        origin: dict[str, str] = {}
        for i, f in enumerate(files):
            rel = f"f{i}/{f.name}"
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, stage / rel)
            origin[rel] = str(f)
        for i, r in enumerate(renders):
            for j, ((_, label, _), text) in enumerate(zip(r.docs, r.texts, strict=True)):
                rel = f"r{i}/d{j}.yaml"
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).write_text(text)
                origin[rel] = label
        data = trivy.scan_config(stage, Path(tmp) / "report.json", cache_dir=trivy.default_cache_dir())
        for res in data.get("Results") or []:
            target = str(res.get("Target", ""))
            where = origin.get(target, target)
            for m in res.get("Misconfigurations") or []:
                if str(m.get("Status", "FAIL")).upper() != "FAIL":
                    continue
                cause = m.get("CauseMetadata") or {}
                out.append(LintFinding(str(m.get("ID") or m.get("AVDID")), rules_sev(m.get("Severity")), where,
                                       int(cause.get("StartLine") or 0), str(m.get("Message") or m.get("Title")),
                                       str(m.get("Resolution") or ""), "trivy"))
    return out


def _rel(path: str) -> str:
    """A path relative to the working directory when it is below it (shorter tables)."""
    cwd = str(Path.cwd()) + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


def rules_sev(value: Any) -> str:
    v = str(value or "UNKNOWN").upper()
    return v if v in RANK else "UNKNOWN"


# ---------------------------------------------------------------- output

def print_report(report: LintReport) -> None:
    from rich.markup import escape

    from pipeline.core.console import console, table

    c = report.checked
    console.print(f"lint: {c['dockerfiles']} Dockerfile(s), {c['yaml_files']} YAML file(s), {c['charts']} chart(s), "
                  f"{c['kubernetes_objects']} Kubernetes object(s) checked")
    shown = [f for f in report.findings if RANK[f.severity] >= RANK["MEDIUM"] or f in report.blocking]
    if shown:
        t = table(f"lint findings (threshold {report.threshold}; LOW ones are in --format json)",
                  "rule", "severity", "file:line", "problem", "fix", "tool")
        for f in shown:
            rule = f"{f.rule} {f.name}".strip()
            where = _rel(f.file) + (f":{f.line}" if f.line else "")
            t.add_row(*(escape(x) for x in (rule, f.severity, where, f.message, f.fix, f.tool)))
        console.print(t)
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n) or "no findings"
    console.print(f"lint: {report.status.upper()} at {report.threshold} ({counts}; {len(report.blocking)} blocking)")
