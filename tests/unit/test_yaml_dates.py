"""Issue 16, dates: an impossible date in any YAML input the pipeline reads is never a traceback.

PyYAML's SafeLoader builds datetime.date objects while loading and raises ValueError for 2026-02-30;
every loader here resolves no implicit timestamps (pipeline/core/yamlfile.py) and the one date field that
matters (the ignore file's expiry, tests/unit/test_ignore_file_trivy.py) is parsed with a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.core.yamlfile import load_text, parse_when

BAD = "annotations:\n  expires: 2026-02-30\n  created: 2026-13-01\n  stamp: !!timestamp 2026-02-31\n"


def test_loader_keeps_dates_as_text() -> None:
    assert load_text(BAD, "x.yaml") == {"annotations": {"expires": "2026-02-30", "created": "2026-13-01",
                                                         "stamp": "2026-02-31"}}
    with pytest.raises(UsageError, match=r"x\.yaml: invalid YAML"):
        load_text("a: [1,", "x.yaml")


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13-01", "2026-00-10", "2025-02-29", "tomorrow", "2026-1-1"])
def test_parse_when_refuses_what_is_not_a_calendar_date(value: str) -> None:
    with pytest.raises(ValueError):
        parse_when(value)


def test_lint_yaml_reader(tmp_path: Path) -> None:
    from pipeline.lint.rules import load_yaml_docs

    docs = load_yaml_docs("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  day: 2026-02-30\n")
    assert docs[0]["data"]["day"] == "2026-02-30"


def test_chart_metadata_reader(tmp_path: Path) -> None:
    from pipeline.lint.charts import chart_meta

    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: x\nversion: 0.1.0\n"
                                         "annotations:\n  released: 2026-02-30\n")
    assert chart_meta(tmp_path)["annotations"]["released"] == "2026-02-30"


def test_advisories_file(tmp_path: Path) -> None:
    from pipeline.local.trivydb import load_advisories

    f = tmp_path / "adv.yaml"
    f.write_text("advisories:\n  - id: X-1\n    source: debian 12\n    package: bash\n    fixed: 5.0-1\n"
                 "    severity: HIGH\n    title: 2026-02-30\n")
    assert load_advisories(f)[0].title == "2026-02-30"
