"""Bump rules: which release (major, minor, patch or none) one commit asks for.

The rule shape and its evaluation follow semantic-release's commit-analyzer (`releaseRules`,
lib/analyze-commit.js and README "Release rules"): the project's own `[[versioning.bump_rules]]` are
tried first; among the rules that match, a `none` rule wins (semantic-release's `release: false`), else the
highest release; only when no own rule matches are the preset's rules used. Presets:

- `conventional` (default) and `semantic-release`: commit-analyzer's default rules
  (lib/default-release-rules.js): breaking → major, revert → patch, feat → minor, fix → patch, perf → patch.
- `commitizen`: the `bump_map` of commitizen's `cz_conventional_commits` (commitizen/defaults.py):
  breaking (`!` or a BREAKING CHANGE footer) → major, feat → minor, fix, refactor, perf → patch.

Merge commits never bump. A non-conventional commit bumps patch only with `non_conventional = "patch"`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from pipeline.core.config import BumpRule, Versioning

if TYPE_CHECKING:
    from pipeline.versioning.commits import ConventionalCommit

RANK: dict[str | None, int] = {None: 0, "patch": 1, "minor": 2, "major": 3}

_CONVENTIONAL = (
    BumpRule("major", breaking=True),
    BumpRule("patch", revert=True),
    BumpRule("minor", type="feat"),
    BumpRule("patch", type="fix"),
    BumpRule("patch", type="perf"),
)
PRESETS: dict[str, tuple[BumpRule, ...]] = {
    "conventional": _CONVENTIONAL,
    "semantic-release": _CONVENTIONAL,
    "commitizen": (
        BumpRule("major", breaking=True),
        BumpRule("minor", type="feat"),
        BumpRule("patch", type="fix"),
        BumpRule("patch", type="refactor"),
        BumpRule("patch", type="perf"),
    ),
}


def rule_matches(rule: BumpRule, c: ConventionalCommit) -> bool:
    """Every criterion the rule sets holds for the commit (type/scope: case-sensitive globs)."""
    if rule.breaking is not None and rule.breaking != c.breaking:
        return False
    if rule.revert is not None and rule.revert != c.revert:
        return False
    if rule.type is not None and not fnmatchcase(c.type or "", rule.type):
        return False
    return rule.scope is None or fnmatchcase(c.scope or "", rule.scope)


def _decide(rules: tuple[BumpRule, ...], c: ConventionalCommit) -> tuple[bool, str | None]:
    """(any rule matched, the release: None for none)."""
    matched = [r.release for r in rules if rule_matches(r, c)]
    if not matched:
        return False, None
    if "none" in matched:
        return True, None
    return True, max(matched, key=lambda p: RANK[p])


def commit_release(c: ConventionalCommit, versioning: Versioning) -> str | None:
    """'major' | 'minor' | 'patch' | None: the bump one commit asks for (before the below-1.0.0 rule)."""
    if c.merge:
        return None
    hit, release = _decide(versioning.bump_rules, c)
    if not hit:
        hit, release = _decide(PRESETS[versioning.preset], c)
    if not hit and c.type is None and not c.revert and versioning.non_conventional == "patch":
        return "patch"
    return release
