"""Every path the CI templates read exists after a real run writes it: a release of the mini project with the
build and scan stages (the real runner, engine, Trivy and DB mirror), then each `.pipeline/<env>/…` path named by
`.gitlab-ci.yml` or `.github/workflows/release.yml` is resolved against what that run left; the run report the
job scripts print (ci/lib.sh, ci_summary) is the one the report writer returned."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.reporter import PlainReporter
from pipeline.release import release as release_module
from tests.integration.build_fixtures import MiniProject
from tests.integration.scan_fixtures import DbMirror

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = (".gitlab-ci.yml", ".github/workflows/release.yml")


def template_paths() -> set[tuple[str, str]]:
    """(environment, path below `.pipeline/<environment>/`) of every state path either template names."""
    found: set[tuple[str, str]] = set()
    for rel in TEMPLATES:
        text = (ROOT / rel).read_text()
        pairs = re.findall(r"\.pipeline/([a-z]+)/([A-Za-z0-9_.*/-]*)", text)
        assert len(pairs) == text.count(".pipeline/"), f"{rel} names a state path outside .pipeline/<env>/"
        found |= set(pairs)
    return found


def test_every_path_the_templates_read_is_written_by_a_real_run(
        mini_project: MiniProject, db_mirror: DbMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = template_paths()
    assert {env for env, _ in named} == {"dev", "prod"}
    assert {"manifest.json", "reports/", "reports/scan.sarif", "runs/"} <= {rest for _, rest in named}, named
    text = (mini_project.root / "pipeline.toml").read_text()
    text = text.replace('stages = ["build"]', 'stages = ["build", "scan"]')
    mini_project.write("pipeline.toml", text + f'\n[scan]\ndb_repository = "{db_mirror.repository}"\n')
    for svc in ("alpha", "beta", "gamma"):   # images of this run only: another run's cleanup removes by image ID
        mini_project.write(f"services/{svc}/run.txt", mini_project.run + "\n")
    mini_project.commit("chore: scan")
    monkeypatch.setattr("pipeline.tools.trivy.CACHE_DIR", tmp_path / "cache")   # not the machine's Trivy cache
    written: list[tuple[Path, ...]] = []

    def spy(*args: Any, **kwargs: Any) -> tuple[Path, ...]:
        paths = real_write_report(*args, **kwargs)
        written.append(tuple(paths))
        return paths

    real_write_report = release_module.write_report
    monkeypatch.setattr(release_module, "write_report", spy)
    cfg = mini_project.config
    release_module.run_release(cfg, cfg.env("dev"), PlainReporter(), yes=True)

    state = cfg.state_dir
    assert state == mini_project.root / ".pipeline"
    for _env, rest in sorted(named):
        hits = list((state / "dev").glob(rest.rstrip("/"))) if rest else []
        assert hits, f".pipeline/<env>/{rest} (named by a CI template) is not what a run writes under {state}/dev"
        assert all(h.is_dir() == rest.endswith("/") for h in hits), (rest, hits)
    assert len(written) == 1
    report_md = next(p for p in written[0] if p.name == "report.md")
    # The job scripts print the newest run report: the very file the writer returned.
    cp = subprocess.run(["bash", "-c", f'source ci/lib.sh; trap - EXIT; STATE_DIR="{state}"; ci_summary dev'],
                        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
                        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == report_md.read_text() and cp.stdout.strip(), cp.stdout[:300]
