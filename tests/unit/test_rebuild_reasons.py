"""Why rebuilt: the difference between two input records in words, and the per-service input cache."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.plan import InputRecord
from pipeline.stages.rebuild_reasons import InputCache, compare, why_rebuilt


def rec(digest: str, files: dict[str, str], args: dict[str, str] | None = None,
        bases: dict[str, str] | None = None, dockerfile: str = "d1") -> InputRecord:
    return InputRecord(digest, dockerfile, files, args or {}, bases or {})


BASE = rec("sha256:1", {"main.go": "0o0:aa", "kit/kit.go": "0o0:bb", "go.mod": "0o0:cc"},
           {"GREETING": "h1"}, {"veza-local/golang:bookworm": "sha256:g1"})


def test_one_file_modified() -> None:
    cur = rec("sha256:2", {**BASE.files, "main.go": "0o0:zz"}, dict(BASE.args), dict(BASE.bases))
    assert why_rebuilt(BASE, cur) == "main.go modified"


def test_mode_change_is_a_modification() -> None:
    cur = rec("sha256:2", {**BASE.files, "main.go": "0o111:aa"}, dict(BASE.args), dict(BASE.bases))
    assert why_rebuilt(BASE, cur) == "main.go modified"


def test_added_removed_args_bases_dockerfile() -> None:
    files = {k: v for k, v in BASE.files.items() if k != "go.mod"}
    files["kit/new.go"] = "0o0:ee"
    cur = rec("sha256:3", files, {"GREETING": "h2", "EXTRA": "x"}, {"veza-local/golang:bookworm": "sha256:g2"},
              dockerfile="d2")
    changes = compare(BASE, cur)
    assert changes.added == ("kit/new.go",) and changes.removed == ("go.mod",) and not changes.modified
    assert changes.args == ("EXTRA", "GREETING")
    assert why_rebuilt(BASE, cur) == ("Dockerfile modified; kit/new.go added; go.mod removed; build args EXTRA, "
                                      "GREETING changed; base image veza-local/golang:bookworm changed")


def test_many_paths_are_counted() -> None:
    cur = rec("sha256:4", {**BASE.files, **{f"f{i}.go": "0o0:00" for i in range(7)}}, dict(BASE.args),
              dict(BASE.bases))
    assert why_rebuilt(BASE, cur) == "f0.go, f1.go, f2.go, f3.go and 3 more added"


def test_no_history_and_same_digest() -> None:
    assert why_rebuilt(None, BASE) == "no earlier build recorded"
    assert why_rebuilt(BASE, BASE) == "same inputs as the last image, but that image is gone"


def test_cache_round_trip_and_garbage(tmp_path: Path) -> None:
    cache = InputCache(tmp_path / "inputs")
    assert cache.load("veza-backend-api") is None
    cache.save("veza-backend-api", BASE)
    assert cache.load("veza-backend-api") == BASE
    (tmp_path / "inputs" / "veza-backend-api.json").write_text("{not json")
    assert cache.load("veza-backend-api") is None
