"""`invoke lint`: Dockerfiles, compose files, Kubernetes manifests, Kustomizations and Helm charts.

- the seed guide's pitfalls (rules VZ001-VZ010, docs/lint.md), Dockerfiles read with BuildKit's parser
- hadolint on Dockerfiles; `trivy config` on everything (one run); `helm lint --strict` and `helm template`
- zizmor (offline) on GitHub Actions workflows (`.github/workflows/*.yml`)
- schema validation of every Kubernetes object for the Kubernetes versions asked for (the environment's
  cluster, a flag or a config value: pipeline/lint/release.py decides)

One finding per problem, with every tool that saw it; chart findings point at the template file and line;
a malformed object is one finding and the run goes on; a target in which nothing is recognised fails.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PolicyBlocked, UsageError
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import SEVERITIES
from pipeline.core.vocab import SEVERITY_RANK as RANK
from pipeline.gate.policy import severity
from pipeline.lint import rules
from pipeline.lint.charts import Rendered, lint_chart, to_template
from pipeline.lint.collect import Inputs, collect, under
from pipeline.lint.dockerfile import DockerfileSyntaxError, parse_dockerfile
from pipeline.lint.external import (
    SchemaJob,
    hadolint_findings,
    is_workflow,
    schema_findings,
    trivy_config_findings,
    zizmor_findings,
)
from pipeline.lint.findings import LintFinding, merge_same_problem, pitfall
from pipeline.lint.secrets import judge

DEFAULT_KUBE_VERSIONS = ("1.20.0", "1.31.0")   # when neither a cluster, a flag nor the config says


@dataclass(frozen=True)
class LintReport:
    threshold: str
    findings: tuple[LintFinding, ...]
    checked: dict[str, int]
    unrecognised: tuple[str, ...] = ()
    kube_versions: tuple[str, ...] = field(default=())

    @property
    def blocking(self) -> tuple[LintFinding, ...]:
        return tuple(f for f in self.findings if RANK[f.severity] >= RANK[self.threshold])

    @property
    def status(self) -> str:
        return "blocked" if self.blocking else "nothing-recognised" if self.unrecognised else "pass"

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in reversed(SEVERITIES)}
        for f in self.findings:
            c[f.severity] += 1
        return c

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "threshold": self.threshold, "counts": self.counts(),
                "checked": self.checked, "kube_versions": list(self.kube_versions),
                "unrecognised": list(self.unrecognised), "blocking_count": len(self.blocking),
                "findings": [f.to_dict() for f in self.findings]}


def lint_paths(targets: list[Path], threshold: str, kube_versions: tuple[str, ...],
               reporter: Reporter | None = None) -> LintReport:
    """Lint files and directories; no printing, no raising on findings (the caller gates).

    Raises UsageError when a target does not exist.
    """
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        raise UsageError(f"lint: no such file or directory: {', '.join(missing)}", "pass existing paths to --path")
    return lint_inputs(collect(targets), severity(threshold), kube_versions, reporter)


def gate(report: LintReport) -> None:
    """Raise PolicyBlocked (exit 3) on findings at the threshold; UsageError (exit 2) when a target held
    nothing this lint recognises (a lint that saw nothing must not pass)."""
    if report.blocking:
        raise PolicyBlocked(f"lint: {len(report.blocking)} finding(s) at or above {report.threshold}",
                            "fix them (each finding names its fix) or lower --threshold")
    if report.unrecognised:
        raise UsageError(f"lint: nothing recognised in {', '.join(report.unrecognised)} (no Dockerfile, compose "
                         "file, Kubernetes manifest, Kustomization or Helm chart)",
                         "pass the paths that hold them (Dockerfile/*.Dockerfile/Containerfile, YAML or JSON with "
                         "apiVersion and kind or services:, a directory with Chart.yaml)")


def run_lint(paths: list[str] | None, threshold: str | None = None, fmt: str = "text", *,
             kube_versions: tuple[str, ...] = (), env_name: str = "", reporter: Reporter | None = None) -> LintReport:
    """The `invoke lint` task: lint, print (text or json), gate. Kubernetes versions: the given ones, else
    the environment's cluster or config (release.kube_versions_for), else DEFAULT_KUBE_VERSIONS."""
    from pipeline.core.config import load_config
    from pipeline.lint.release import default_settings, normal_version

    if fmt not in ("text", "json"):
        raise UsageError(f"unknown format '{fmt}'", "use --format text or --format json")
    level, versions = default_settings(env_name, reporter, versions_needed=not kube_versions)
    if threshold:
        level = severity(threshold)
    if kube_versions:
        bad = [v for v in kube_versions if not re.fullmatch(r"v?1\.\d+(\.\d+)?", v)]
        if bad:
            raise UsageError(f"lint: '{bad[0]}' is not a Kubernetes version", "pass e.g. --kube-version 1.31")
        versions = tuple(dict.fromkeys(normal_version(v) for v in kube_versions))
    root = load_config(check_files=False).root if not paths else Path()  # the project VEZA_CONFIG names
    targets = [Path(p) for p in paths] if paths else \
        [root / d for d in ("dockerfiles", "compose", "k8s", "helm", ".github/workflows") if (root / d).exists()]
    report = lint_paths(targets, level, versions, reporter)
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    gate(report)
    return report


# ---------------------------------------------------------------- the checks

def _guarded(what: str, file: str, check: Any, *args: Any, **kwargs: Any) -> list[LintFinding]:
    """Run one rule function on one object; an unexpected shape is one finding, never a crash of the run."""
    try:
        return list(check(*args, **kwargs))
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        return [LintFinding("MALFORMED", "HIGH", file, 0, f"{what}: cannot be checked ({type(exc).__name__}: {exc})",
                            "give each field the type its reference documents")]


def _lint_yaml(y: Path, inputs: Inputs, found: list[LintFinding], schema_jobs: list[SchemaJob],
               malformed: list[tuple[str, int, int]]) -> bool:
    """Lint one YAML/JSON file; True when it holds something recognised (and trivy should see it)."""
    rp = y.resolve()
    if rp in inputs.json_patches:
        return True          # JSON 6902 operations: nothing of an object to judge
    try:
        docs = rules.load_yaml_docs(y.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        if y.suffix == ".json":
            return False     # JSON that is not even valid: no manifest kubectl would take, not ours to judge
        mark = getattr(exc, "problem_mark", None)
        found.append(LintFinding("YAML", "HIGH", str(y), (mark.line + 1) if mark else 0,
                                 f"invalid YAML: {str(exc).splitlines()[0]}", "fix the YAML syntax", "yaml"))
        return True
    recognised = False
    starts = [rules._line(d) for d in docs] + [10**9]
    for n, doc in enumerate(docs):
        before = len(found)
        if rules.is_compose(doc):
            recognised = True
            found.extend(_guarded("compose file", str(y), rules.compose_rules, doc, str(y)))
            continue
        if not rules.is_k8s(doc):
            continue
        recognised = True
        items = doc.get("items") if str(doc["kind"]).endswith("List") else None
        objects = [i for i in items if rules.is_k8s(i)] if isinstance(items, list) else [doc]
        for obj in objects:
            if rp in inputs.patches:
                found.extend(_guarded(f"patch {obj['kind']}", str(y), rules.patch_rules, obj, str(y)))
            else:
                found.extend(_guarded(f"{obj['kind']}", str(y), rules.k8s_rules, obj, str(y), committed=True))
                schema_jobs.append((obj, str(y), None))
        if any(f.rule == "MALFORMED" for f in found[before:]):
            malformed.append((str(y), starts[n], starts[n + 1] - 1))
    return recognised


def _kustomization_findings(k: Path) -> list[LintFinding]:
    """VZ003 in configMapGenerator/secretGenerator literals of a Kustomization."""
    try:
        docs = rules.load_yaml_docs(k.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        return [LintFinding("YAML", "HIGH", str(k), 0, f"invalid YAML: {str(exc).splitlines()[0]}",
                            "fix the YAML syntax", "yaml")]
    out: list[LintFinding] = []
    for doc in docs:
        for gen, committed in (("configMapGenerator", False), ("secretGenerator", True)):
            entries = doc.get(gen) if isinstance(doc, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                lits = entry.get("literals") if isinstance(entry, dict) else None
                for i, lit in enumerate(lits if isinstance(lits, list) else []):
                    name, _, value = str(lit).partition("=")
                    reason = f"{name} is a secret committed to the repository" if committed and value \
                        else judge(name, value)
                    if reason:
                        lines = getattr(lits, "item_lines", [])
                        line = lines[i] if i < len(lines) else 0
                        out.append(pitfall("VZ003", str(k), line, f"{gen} literal: {reason}"))
    return out


def lint_inputs(inputs: Inputs, threshold: str, kube_versions: tuple[str, ...],
                reporter: Reporter | None = None) -> LintReport:
    """Every check over the collected inputs; one finding per problem."""
    found: list[LintFinding] = []
    recognised: list[str] = [str(p) for p in inputs.dockerfiles + inputs.charts + inputs.kustomizations]
    schema_jobs: list[SchemaJob] = []
    malformed: list[tuple[str, int, int]] = []   # (file, first line, last line) of objects found malformed
    yaml_for_trivy: list[Path] = []
    rejects: set[str] = set()
    for df in inputs.dockerfiles:
        text = df.read_text(errors="replace")
        try:
            parse_dockerfile(text)
        except DockerfileSyntaxError:
            rejects.add(str(df))
        found += _guarded("Dockerfile", str(df), rules.dockerfile_rules, text, str(df))
    for k in inputs.kustomizations:
        found += _kustomization_findings(k)
    workflows = [y for y in inputs.yamls if is_workflow(y)]
    found += zizmor_findings(workflows)
    recognised += [str(w) for w in workflows]
    for y in inputs.yamls:
        if y in workflows:
            continue
        if _lint_yaml(y, inputs, found, schema_jobs, malformed):
            recognised.append(str(y))
            if y.resolve() not in inputs.patches | inputs.json_patches:
                yaml_for_trivy.append(y)
    renders: list[Rendered] = []
    for chart in inputs.charts:
        if reporter:
            reporter.detail(f"lint: helm lint and template {chart}")
        chart_findings, chart_renders = lint_chart(chart, kube_versions)
        found += chart_findings
        renders += chart_renders
    current = kube_versions[-1] if kube_versions else ""
    rule_renders = [r for r in renders if r.kube_version == current]
    found += rendered_rule_findings(rule_renders)
    jobs = [(job, kv) for job in schema_jobs for kv in kube_versions]
    jobs += [((d.obj, str(d.template), d), r.kube_version) for r in renders for d in r.docs]
    found += schema_findings(jobs)
    found += hadolint_findings(inputs.dockerfiles, rejects)
    trivy_found, spans = trivy_config_findings(inputs.dockerfiles + yaml_for_trivy, rule_renders,
                                               reporter.detail if reporter else (lambda _: None))
    found += _fold_into_malformed(trivy_found, malformed, found)
    unique = _dedupe(merge_same_problem(found, spans))
    checked = {"dockerfiles": len(inputs.dockerfiles), "yaml_files": len(inputs.yamls), "charts": len(inputs.charts),
               "kustomizations": len(inputs.kustomizations), "workflows": len(workflows),
               "kubernetes_objects": len(schema_jobs) + sum(len(r.docs) for r in rule_renders)}
    unrecognised = tuple(str(t) for t in inputs.targets if not any(under(p, t) for p in recognised))
    return LintReport(threshold, tuple(unique), checked, unrecognised, kube_versions)


def rendered_rule_findings(renders: list[Rendered]) -> list[LintFinding]:
    """The VZ and Pod Security rules on each rendered object (a `kind: List` template's items included),
    pointed back at the template file and line that produced it."""
    found: list[LintFinding] = []
    for r in renders:   # pitfalls once per values set (not once per Kubernetes version)
        for d in r.docs:
            for f in _guarded(d.what, str(d.template), rules.k8s_rules, d.obj, str(d.template)):
                where, line = to_template(d, f.line)
                found.append(LintFinding(f.rule, f.severity, where, line, f"{f.message} (rendered with {r.values})",
                                         f.fix, f.tool))
    return found


def _fold_into_malformed(trivy_found: list[LintFinding], malformed: list[tuple[str, int, int]],
                         found: list[LintFinding]) -> list[LintFinding]:
    """What trivy says about an object the API server rejects is the same problem: fold it into MALFORMED."""
    keep: list[LintFinding] = []
    for f in trivy_found:
        hit = next(((file, a, b) for file, a, b in malformed if f.file == file and a <= f.line <= b), None)
        if hit is None:
            keep.append(f)
            continue
        for i, m in enumerate(found):
            if m.rule == "MALFORMED" and m.file == hit[0] and hit[1] <= m.line <= hit[2]:
                found[i] = replace(m, seen_by=tuple(sorted({*m.seen_by, f"{f.tool} {f.rule}"})))
                break
    return keep


def _dedupe(findings: list[LintFinding]) -> list[LintFinding]:
    """The same (rule, file, line) from several renderings (values sets) is one finding."""
    best: dict[tuple[str, str, int, str], LintFinding] = {}
    for f in findings:
        key = (f.rule, f.file, f.line, f.message.split(" (rendered with ")[0])
        if key not in best:
            best[key] = f
    return sorted(best.values(), key=lambda f: (f.file, f.line, -RANK[f.severity], f.rule, f.message))


# ---------------------------------------------------------------- output

def _rel(path: str) -> str:
    cwd = str(Path.cwd()) + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


def print_report(report: LintReport) -> None:
    from rich.markup import escape

    from pipeline.core.console import console, table

    c = report.checked
    console.print(f"lint: {c['dockerfiles']} Dockerfile(s), {c['yaml_files']} YAML file(s), {c['charts']} chart(s), "
                  f"{c['kustomizations']} Kustomization(s), {c['kubernetes_objects']} Kubernetes object(s), "
                  f"{c.get('workflows', 0)} workflow(s) checked; "
                  f"schemas for Kubernetes {', '.join(report.kube_versions) or '(none)'}")
    shown = [f for f in report.findings if RANK[f.severity] >= RANK["MEDIUM"] or f in report.blocking]
    if shown:
        t = table(f"lint findings (threshold {report.threshold}; LOW ones are in --format json)",
                  "rule", "severity", "file:line", "problem", "fix", "tools")
        for f in shown:
            rule = f"{f.rule} {f.name}".strip()
            where = _rel(f.file) + (f":{f.line}" if f.line else "")
            tools = ", ".join((f.tool, *f.seen_by))
            t.add_row(*(escape(x) for x in (rule, f.severity, where, f.message, f.fix, tools)))
        console.print(t)
    for u in report.unrecognised:
        console.print(f"lint: nothing recognised in {escape(_rel(u))}")
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n) or "no findings"
    console.print(f"lint: {report.status.upper()} at {report.threshold} ({counts}; {len(report.blocking)} blocking)")
