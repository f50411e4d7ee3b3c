"""Under CI a test that skips or xfails did not prove anything, so it fails (issue 27: tests cannot pass by not
running). `CI` is set to `true` by `.ci/run` (and by GitLab/GitHub runners); outside CI skips and xfails
report as usual, so a developer without, say, a cluster still gets a readable run.

Loaded by `tests/conftest.py` (`pytest_plugins`); its behaviour is proven by `tests/unit/test_no_skip_under_ci.py`,
which runs a tiny suite with a skip and an xfail through pytester with and without `CI=true`.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

TRUE = ("1", "true", "yes")


def under_ci() -> bool:
    """Is the `CI` variable set to a true value (1/true/yes, any case)?"""
    return os.environ.get("CI", "").strip().lower() in TRUE


def _why(report: pytest.TestReport | pytest.CollectReport) -> str:
    if getattr(report, "wasxfail", None) is not None:
        kind, reason = "xfail", str(getattr(report, "wasxfail", ""))
    else:
        longrepr = report.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        kind = "skip"
    return (f"CI=true: a {kind} is a failure here, the test proved nothing ({reason}). "
            "Make it run on this machine, or delete it.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    # an xfail that unexpectedly passes (non-strict) is reported as passed with `wasxfail`: it fails too
    if under_ci() and (report.skipped or getattr(report, "wasxfail", None) is not None):
        report.longrepr = _why(report)
        report.outcome = "failed"
        if hasattr(report, "wasxfail"):
            del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if under_ci() and report.skipped:   # a module-level pytest.skip(allow_module_level=True)
        report.longrepr = _why(report)
        report.outcome = "failed"
