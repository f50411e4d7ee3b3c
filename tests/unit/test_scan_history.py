"""Which findings a new image no longer has: the comparison with the last scan (pure)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import load_config
from pipeline.gate.history import compare, load_history, save_history, summary_line, vulnerability_keys
from pipeline.gate.policy import Finding

ROOT = Path(__file__).resolve().parents[2]


def _vuln(cve: str, pkg: str = "stdlib") -> Finding:
    return Finding("vulnerability", cve, "HIGH", "app/bin", package=pkg)


def test_resolved_and_new_findings_are_named() -> None:
    before = vulnerability_keys([_vuln("CVE-2025-22871"), _vuln("CVE-2025-47907"), _vuln("CVE-2023-45853", "zlib1g")])
    after = vulnerability_keys([_vuln("CVE-2023-45853", "zlib1g"), _vuln("CVE-2026-0001"),
                                Finding("secret", "aws-access-key-id", "CRITICAL", "etc/x")])
    diff = compare({"image_id": "sha256:old", "at": "t0", "keys": before}, "sha256:new", after)
    assert diff is not None
    assert diff.resolved == ("CVE-2025-22871 stdlib", "CVE-2025-47907 stdlib")
    assert diff.introduced == ("CVE-2026-0001 stdlib",)
    line = summary_line("veza-backend-api", diff)
    assert "2 resolved (CVE-2025-22871, CVE-2025-47907)" in line and "1 new (CVE-2026-0001)" in line


def test_no_comparison_without_a_previous_scan_or_for_the_same_image() -> None:
    assert compare(None, "sha256:a", ["CVE-1 p"]) is None
    assert compare({"image_id": "sha256:a", "keys": ["CVE-2 p"]}, "sha256:a", ["CVE-1 p"]) is None


def test_history_round_trip_and_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "h" / "staging.json"
    assert load_history(f) == {}
    save_history(f, {"svc": {"image_id": "sha256:a", "at": "t", "keys": ["CVE-1 p"]}})
    assert load_history(f)["svc"]["keys"] == ["CVE-1 p"]
    f.write_text("[not a mapping]")
    assert load_history(f) == {}


def test_infra_threshold_defaults_to_the_scan_threshold_and_is_stated_for_every_env() -> None:
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    for env in cfg.environments.values():
        assert env.infra_scan_threshold, f"{env.name}: infra_scan_threshold is not stated in pipeline.toml"
        assert env.infra_threshold == env.infra_scan_threshold
    from dataclasses import replace
    staging = cfg.env("staging")
    assert replace(staging, infra_scan_threshold="").infra_threshold == staging.scan_threshold


def test_the_readme_config_table_names_every_key_the_config_reader_accepts() -> None:
    import re

    source = (ROOT / "pipeline" / "core" / "config.py").read_text()
    keys = set(re.findall(r'\.(?:text|integer|flag|texts|number|table)\("([a-z_]+)"', source))
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Release manifest")]
    missing = sorted(k for k in keys if f"`{k}`" not in table and f"[{k}" not in table)
    assert not missing, f"README's configuration table does not name: {missing}"
    assert "CI=true" in table
