"""The CI hook (tests/no_skip_under_ci.py): under CI=true a skip or an xfail fails the run; without CI they
report as usual. A tiny suite runs in-process through pytester with the same plugin the real conftest loads."""

from __future__ import annotations

import pytest

PLUGIN = "tests.no_skip_under_ci"
SUITE = """
import pytest

def test_passes():
    assert True

def test_skips_in_the_body():
    pytest.skip("no buildx here")

@pytest.mark.skipif(True, reason="skipped by a mark")
def test_skipped_by_a_mark():
    assert True

@pytest.mark.xfail(reason="known broken")
def test_expected_to_fail():
    assert False

def test_xfails_in_the_body():
    pytest.xfail("sigstore disabled")

@pytest.mark.xfail(reason="marked, but passes")
def test_xpass():
    assert True
"""
MODULE_SKIP = """
import pytest
pytest.skip("whole module skipped", allow_module_level=True)

def test_never_runs():
    assert True
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None,
         source: str = SUITE) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_tiny=source)
    return pytester.runpytest_inprocess("-p", PLUGIN, "-p", "no:cacheprovider", "-rA")


def test_the_real_conftest_loads_the_hook(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin(PLUGIN)


def test_without_ci_skips_and_xfails_report_as_usual(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    res = _run(pytester, monkeypatch, None)
    res.assert_outcomes(passed=1, skipped=2, xfailed=2, xpassed=1)
    assert res.ret == 0


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_under_ci_every_skip_and_xfail_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                             value: str) -> None:
    res = _run(pytester, monkeypatch, value)
    # the skipif mark fires during setup, so pytest counts that one as an error; the rest fail in the call
    res.assert_outcomes(passed=1, failed=4, errors=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["*CI=true: a skip is a failure here*no buildx here*",
                              "*CI=true: a xfail is a failure here*sigstore disabled*"])


def test_under_ci_a_module_level_skip_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _run(pytester, monkeypatch, "true", MODULE_SKIP)
    res.assert_outcomes(errors=1)
    assert res.ret != 0
    assert _run(pytester, monkeypatch, None, MODULE_SKIP).ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_ci_false_is_not_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _run(pytester, monkeypatch, "false")
    res.assert_outcomes(passed=1, skipped=2, xfailed=2, xpassed=1)
