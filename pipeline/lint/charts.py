"""Helm charts: `helm lint --strict`, `helm template` per values file and Kubernetes version, and the way
back from a line of the rendered output to the template file and line that produced it.

A library chart (`type: library` in Chart.yaml) renders nothing and cannot be installed (Helm docs,
"Library Charts"): it gets `helm lint` only. Values sets: values.yaml alone, then each values-<env>.yaml;
the chart's ci/*-values.yaml (test inputs, the chart-testing convention) apply to all.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.yamlfile import DatelessLoader  # dates stay text: 2026-02-30 is no crash
from pipeline.lint.findings import LintFinding
from pipeline.lint.rules import is_k8s, load_yaml_docs

SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)
KEY = re.compile(r"^\s*(?:-\s+)?([A-Za-z0-9_.$/-]+|\"[^\"]+\")\s*:(\s|$)")


@dataclass
class RenderedDoc:
    obj: Any                 # the object, as loaded (YMap with line numbers)
    template: Path           # the template file that produced it
    body: str                # the rendered document's text; line 1 is the line after its `# Source:` comment
    what: str                # Kind/name


@dataclass
class Rendered:
    chart: Path
    values: str              # the values set's label (values.yaml, values-prod.yaml)
    kube_version: str
    docs: list[RenderedDoc]


def chart_meta(chart: Path) -> dict[str, Any]:
    """Chart.yaml as a dict ({} when unreadable: helm lint reports that)."""
    try:
        meta: Any = yaml.load((chart / "Chart.yaml").read_text(errors="replace"), Loader=DatelessLoader)
    except (OSError, yaml.YAMLError):
        return {}
    return meta if isinstance(meta, dict) else {}


def chart_type(chart: Path) -> str:
    """`application` or `library` (Chart.yaml's `type`, default application)."""
    return str(chart_meta(chart).get("type") or "application")


def vendor_local_dependencies(chart: Path, workdir: Path) -> tuple[Path, list[str]]:
    """The chart to give helm, with its dependencies present, and the dependencies that cannot be.

    A dependency is present when charts/<name>/ or charts/<name>-*.tgz exists. A missing one whose
    repository is `file://<dir>` (a library chart beside it, as in a monorepo) is copied into a copy of the
    chart under `workdir`, which is what `helm dependency build` does, without touching the user's tree.
    Returns (chart or its copy, names of missing dependencies from other repositories).
    """
    deps = chart_meta(chart).get("dependencies")
    copies: list[tuple[str, Path]] = []
    missing: list[str] = []
    for dep in deps if isinstance(deps, list) else []:
        if not isinstance(dep, dict) or not dep.get("name"):
            continue
        name, repo = str(dep["name"]), str(dep.get("repository") or "")
        if (chart / "charts" / name / "Chart.yaml").is_file() or list((chart / "charts").glob(f"{name}-*.tgz")):
            continue
        source = (chart / repo.removeprefix("file://")).resolve() if repo.startswith("file://") else None
        if source is not None and (source / "Chart.yaml").is_file():
            copies.append((name, source))
        else:
            missing.append(name)
    if not copies:
        return chart, missing
    staged = workdir / chart.name
    shutil.copytree(chart, staged, symlinks=True)
    for name, source in copies:
        shutil.copytree(source, staged / "charts" / name, symlinks=True)
    return staged, missing


def values_sets(chart: Path) -> list[tuple[str, list[Path]]]:
    ci = sorted((chart / "ci").glob("*values*.yaml")) if (chart / "ci").is_dir() else []
    sets: list[tuple[str, list[Path]]] = [("values.yaml", ci)]
    for v in sorted(chart.glob("values-*.yaml")):
        sets.append((v.name, [v, *ci]))
    return sets


def split_rendered(text: str, chart: Path) -> list[RenderedDoc]:
    """The Kubernetes objects of `helm template` output, each with the template that produced it."""
    out: list[RenderedDoc] = []
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        m = SOURCE.search(chunk)
        body = chunk[m.end() + 1:] if m else chunk.lstrip("\n")
        try:
            docs = load_yaml_docs(body)
        except yaml.YAMLError:
            continue
        template = chart / (m.group(1).split("/", 1)[-1] if m else "?")
        for doc in docs:
            if is_k8s(doc):
                meta = doc.get("metadata")
                name = meta.get("name", "?") if isinstance(meta, dict) else "?"
                out.append(RenderedDoc(doc, template, body, f"{doc['kind']}/{name}"))
    return out


def _key(line: str) -> str | None:
    m = KEY.match(line)
    return m.group(1).strip('"') if m else None


def template_line(template_text: str, rendered: str, line: int) -> int:
    """The template line that produced line `line` (1-based) of a rendered document; 0 when unknown.

    The YAML key on the rendered line is looked up in the template: its k-th occurrence in the rendered
    document is the k-th in the template when both have as many (a key written once in a loop: the one).
    A line whose key the template does not hold (text that came from values through toYaml) maps to the
    nearest line above it that does map.
    """
    r_lines, t_lines = rendered.splitlines(), template_text.splitlines()
    t_keys = [_key(x) for x in t_lines]
    for n in range(min(line, len(r_lines)), 0, -1):
        key = _key(r_lines[n - 1])
        if key is None:
            continue
        hits = [i + 1 for i, k in enumerate(t_keys) if k == key]
        if not hits:
            continue
        occurrence = sum(1 for x in r_lines[: n - 1] if _key(x) == key)
        total = sum(1 for x in r_lines if _key(x) == key)
        if len(hits) == 1:
            return hits[0]
        if total == len(hits):
            return hits[occurrence]
        return hits[min(occurrence, len(hits) - 1)]
    return 0


def to_template(doc: RenderedDoc, line: int) -> tuple[str, int]:
    """(template file, template line) for a line of a rendered document."""
    try:
        text = doc.template.read_text(errors="replace")
    except OSError:
        return str(doc.template), 0
    return str(doc.template), template_line(text, doc.body, line) if line else 0


def lint_chart(chart: Path, kube_versions: tuple[str, ...]) -> tuple[list[LintFinding], list[Rendered]]:
    """helm lint --strict per values set; helm template per values set and Kubernetes version (not for a
    library chart). Findings of helm itself point at the chart directory with the values set named."""

    found: list[LintFinding] = []
    renders: list[Rendered] = []
    library = chart_type(chart) == "library"
    with tempfile.TemporaryDirectory(prefix="veza-chart-") as tmp:
        given, missing = vendor_local_dependencies(chart, Path(tmp))
        if missing:
            return [LintFinding("HELM-DEPENDENCY", "HIGH", str(chart / "Chart.yaml"), 0,
                                f"dependencies not in charts/: {', '.join(missing)}; the chart cannot be rendered",
                                f"run `helm dependency build {chart}` (or vendor them under charts/)", "helm")], []
        for label, files in values_sets(chart):
            _lint_values_set(chart, given, label, files, kube_versions, library, found, renders)
    return found, renders


def _lint_values_set(chart: Path, given: Path, label: str, files: list[Path], kube_versions: tuple[str, ...],
                     library: bool, found: list[LintFinding], renders: list[Rendered]) -> None:
    from pipeline.tools import helm

    where = f"{chart} [{label}]"
    res = helm.lint(given, files, strict=True, kube_version=kube_versions[-1] if kube_versions else "")
    for line in (res.stdout + "\n" + res.stderr).splitlines():
        m = re.match(r"^\[(ERROR|WARNING|INFO)\]\s*(.*)$", line.strip())
        if m and m.group(1) != "INFO":
            found.append(LintFinding("HELM-LINT", "HIGH", where, 0, m.group(2),
                                     "fix the chart (helm lint --strict treats warnings as errors)", "helm"))
    if not res.ok and not any(f.file == where for f in found):
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:]
        found.append(LintFinding("HELM-LINT", "HIGH", where, 0, f"helm lint --strict failed: {' '.join(tail)}",
                                 "fix the chart", "helm"))
    if library:
        return
    for kv in kube_versions:
        try:
            text = helm.template(given, "lint", files, namespace="lint", kube_version=kv)
        except PipelineError as exc:
            found.append(LintFinding("HELM-TEMPLATE", "HIGH", where, 0,
                                     f"helm template (Kubernetes {kv}) failed: {exc.message}",
                                     "fix the template or the values", "helm"))
            continue
        renders.append(Rendered(chart, label, kv, split_rendered(text, chart)))
