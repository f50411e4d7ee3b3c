"""The gate's ignore-file matching against the real Trivy: the same `.trivyignore.yaml` entries, applied by
`trivy config --ignorefile` and by pipeline.gate, must leave the same misconfigurations (issue 16, case 6).

No engine, no network: `trivy config` checks a Dockerfile with its embedded checks (about 1 s a run).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.gate.policy import Policy, evaluate, parse_ignore_file, parse_report
from pipeline.tools import trivy

pytestmark = pytest.mark.slow

# Each entry's statement and expiry satisfy the pipeline's own rules, so only Trivy's matching differs.
ENTRIES = [
    "id: AVD-DS-0002", "id: DS002", "id: DS-0002", "id: ds-0002", "id: AVD-DS-0026",
    "id: DS-0002\n    paths: ['**/Dockerfile']", "id: DS-0002\n    paths: ['*/Dockerfile']",
    "id: DS-0002\n    paths: ['Dockerfile/**']", "id: DS-0002\n    paths: ['/Dockerfile']",
    "id: DS-0002\n    paths: ['{Dockerfile,x}']", "id: DS-0002\n    expired_at: 2020-01-01",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ignore-vs-trivy")
    (d / "src").mkdir()
    (d / "src" / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")   # DS-0002 (no USER), DS-0026 (no HEALTHCHECK)
    return d


@pytest.fixture(scope="module")
def full(project: Path) -> dict[str, object]:
    """The unfiltered report, made once."""
    report = trivy.scan_config(project / "src", project / "full.json", cache_dir=project / "cache")
    assert _ids(report) == {"DS-0002", "DS-0026"}
    return report


def _ids(report: dict[str, object]) -> set[str]:
    return {f.id for f in parse_report(report).findings}


@pytest.mark.parametrize("entry", ENTRIES)
def test_gate_ignores_exactly_what_trivy_ignores(project: Path, full: dict[str, object], tmp_path: Path,
                                                 entry: str) -> None:
    if "expired_at" not in entry:
        entry += "\n    expired_at: 2099-01-01"
    text = f"misconfigurations:\n  - {entry}\n    statement: cross-check with trivy\n"
    ign = tmp_path / ".trivyignore.yaml"
    ign.write_text(text)
    by_trivy = _ids(trivy.scan_config(project / "src", tmp_path / "filtered.json", cache_dir=project / "cache",
                                      ignore_file=ign))
    verdict = evaluate(parse_report(full).findings, Policy("LOW", False, parse_ignore_file(text)),
                       datetime.now(UTC))
    by_gate = {f.id for f in verdict.findings if f.kind == "misconfig"}
    assert by_gate == by_trivy, f"entry {entry!r}: trivy leaves {by_trivy}, the gate leaves {by_gate}"


PLAIN = ["AVD-DS-0002", "DS002", "DS-0002", "ds-0002", "DS-0002 exp:2020-01-01", "DS-0002 exp:2099-01-01",
         "DS-0026 # comment"]


@pytest.mark.parametrize("line", PLAIN)
def test_plain_trivyignore_matches_what_trivy_matches(project: Path, full: dict[str, object], tmp_path: Path,
                                                      line: str) -> None:
    from pipeline.gate.ignorefile import load_ignore_file

    ign = tmp_path / ".trivyignore"
    # every line carries an expiry and a statement (`# …`): only the matching is compared, not the pipeline's
    # own rule that an entry without them ignores nothing
    ident, _, comment = line.partition("#")
    exp = "" if "exp:" in ident else " exp:2099-01-01"
    ign.write_text(f"{ident.strip()}{exp} # {comment.strip() or 'accepted for the cross-check'}\n")
    by_trivy = _ids(trivy.scan_config(project / "src", tmp_path / "filtered.json", cache_dir=project / "cache",
                                      ignore_file=ign))
    verdict = evaluate(parse_report(full).findings, Policy("LOW", False, load_ignore_file(ign)), datetime.now(UTC))
    by_gate = {f.id for f in verdict.findings if f.kind == "misconfig"}
    assert by_gate == by_trivy, f"line {line!r}: trivy leaves {by_trivy}, the gate leaves {by_gate}"


def test_a_trivyignore_in_the_working_directory_is_not_applied_behind_the_gate(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trivy reads `.trivyignore` from its working directory by itself; the pipeline's scans must not, or an
    entry without statement or expiry would silently hide a finding the gate never sees."""
    (tmp_path / ".trivyignore").write_text("DS-0002\n")
    monkeypatch.chdir(tmp_path)
    report = trivy.scan_config(project / "src", tmp_path / "r.json", cache_dir=project / "cache")
    assert _ids(report) == {"DS-0002", "DS-0026"}
