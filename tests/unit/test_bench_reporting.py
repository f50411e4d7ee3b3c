"""bench/change_loop.py's verdicts and bench/run_facts.py's commit: the figures the bench prints (issue 28)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.change_loop import report
from bench.run_facts import commit


def samples(ours: list[float], script: list[float]) -> dict[str, list[float]]:
    return {"ours, one process": ours, "ours, two processes": [x + 1 for x in ours],
            "seed loop": [x * 2 for x in script], "careful script": script}


def test_ratio_is_of_medians_and_target_verdict_follows_it() -> None:
    lines = report("go", samples([1.0, 1.4, 9.0], [2.0, 2.2, 2.1]), ("1.00", "2.00"))
    one = next(ln for ln in lines if ln.startswith("| ours, one process |"))
    # median 1.4 ÷ median 2.1 = 0.67 ≤ 0.7: met, despite the 9.0 outlier
    assert "1.40 s (1.00–9.00)" in one and "0.67×" in one and "≤ 0.7×: met" in one
    two = next(ln for ln in lines if ln.startswith("| ours, two processes |"))
    assert "1.14×" in two and "≤ 0.8×: not met" in two
    assert any("load 1.00 → 2.00" in ln for ln in lines)


def test_nothing_changed_target_is_half_the_script() -> None:
    lines = report("noop", samples([0.30, 0.31, 0.29], [0.58, 0.60, 0.62]), ("1", "1"))
    one = next(ln for ln in lines if ln.startswith("| ours, one process |"))
    assert "≤ 0.5×: met" in one       # 0.30 / 0.60 = 0.50
    lines = report("noop", samples([0.31, 0.32, 0.33], [0.58, 0.60, 0.62]), ("1", "1"))
    one = next(ln for ln in lines if ln.startswith("| ours, one process |"))
    assert "≤ 0.5×: not met" in one


def test_commit_says_dirty_only_when_tracked_files_differ(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
                       check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "f").write_text("a\n")
    git("add", "f")
    git("commit", "-qm", "one")
    clean = commit(tmp_path)
    assert len(clean) == 12 and not clean.endswith("+dirty")
    (tmp_path / "f").write_text("b\n")
    assert commit(tmp_path) == clean + "+dirty"
    assert commit(tmp_path / "missing") == "unknown"
