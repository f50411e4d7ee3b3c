"""The embedded DB seed holds real, sourced advisories in Trivy's layout, and DB bundles are checked before import.

Pure: no engine, no registry. The version arithmetic below is a test-only reading of the seed's Go ranges
(">=A, <B" lists, the format trivy-db writes for the Go vulnerability database).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.local.trivydb import STATUSES, db_entries, load_advisories, parse_advisories
from pipeline.local.trivydb.bundle import BOLT_MAGIC, inspect_bundle

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "pipeline" / "local" / "trivydb" / "local-mirror.yaml"
GO_BUCKET = "go::The Go Vulnerability Database"


def _v(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.removeprefix("v").split("-")[0].split("."))


def _in_ranges(version: str, ranges: tuple[str, ...]) -> bool:
    for r in ranges:
        lo, _, hi = (p.strip() for p in r.partition(","))
        if _v(lo.removeprefix(">=")) <= _v(version) and (not hi or _v(version) < _v(hi.removeprefix("<"))):
            return True
    return False


def test_every_seed_entry_is_a_real_id_with_its_source_and_date() -> None:
    advisories = load_advisories(SEED)
    assert len(advisories) >= 60
    for a in advisories:
        assert re.fullmatch(r"CVE-\d{4}-\d{4,}", a.id), a.id
        assert a.origin.startswith(("https://pkg.go.dev/vuln/GO-", "https://security-tracker.debian.org/tracker/CVE-"))
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", a.date), (a.id, a.date)
        assert a.source in (GO_BUCKET, "debian 12")
    assert {a.source for a in advisories} == {GO_BUCKET, "debian 12"}


def test_go_entries_cover_go_1_22_12_and_none_covers_go_1_27_3() -> None:
    go = [a for a in load_advisories(SEED) if a.source == GO_BUCKET]
    assert len(go) == 52
    for a in go:
        assert a.package == "stdlib" and a.vendor_ids and a.vendor_ids[0].startswith("GO-20")
        assert a.origin.endswith(a.vendor_ids[0])
        assert _in_ranges("1.22.12", a.vulnerable), a.id
        assert not _in_ranges("1.27.3", a.vulnerable), a.id
        assert all(_v(p) > _v("1.22.12") for p in a.patched), a.id
    ids = {a.id for a in go}
    assert {"CVE-2025-22871", "CVE-2025-47907", "CVE-2025-58187", "CVE-2026-27145"} <= ids


def test_debian_entries_use_source_packages_and_statuses() -> None:
    deb = {a.id: a for a in load_advisories(SEED) if a.source == "debian 12"}
    assert deb["CVE-2023-45853"].package == "zlib" and deb["CVE-2023-45853"].status == "will_not_fix"
    assert deb["CVE-2010-4756"].package == "glibc"     # the source package, not libc6
    fixed = [a for a in deb.values() if a.fixed]
    assert fixed and all(not a.status for a in fixed)
    assert all(a.status in STATUSES for a in deb.values() if not a.fixed)


def test_db_entries_follow_trivy_db_layout() -> None:
    [go, deb] = parse_advisories([
        {"id": "CVE-2025-22871", "source": GO_BUCKET, "package": "stdlib", "vendor_ids": ["GO-2025-3563"],
         "vulnerable": [">=0.0.0-0, <1.23.8"], "patched": ["1.23.8"], "severity": "MEDIUM"},
        {"id": "CVE-2023-45853", "source": "debian 12", "package": "zlib", "status": "will_not_fix",
         "severity": "CRITICAL", "severity_source": "nvd"},
    ])
    entries = {(tuple(e["path"]), e["key"]): e.get("value") for e in db_entries([go, deb])}
    assert entries[((GO_BUCKET, "stdlib"), "CVE-2025-22871")] == {
        "VulnerableVersions": [">=0.0.0-0, <1.23.8"], "PatchedVersions": ["1.23.8"], "VendorIDs": ["GO-2025-3563"]}
    assert entries[(("debian 12", "zlib"), "CVE-2023-45853")] == {"Status": 5}   # trivy-db: will_not_fix = 5
    assert entries[(("data-source",), GO_BUCKET)]["ID"] == "govulndb"
    assert entries[(("vulnerability",), "CVE-2025-22871")] == {
        "Title": "CVE-2025-22871 in stdlib", "Description": "", "Severity": "MEDIUM"}
    assert entries[(("vulnerability",), "CVE-2023-45853")]["VendorSeverity"] == {"nvd": 4}
    with pytest.raises(UsageError, match="unknown status 'wontfix'"):
        parse_advisories([{"id": "X", "source": "debian 12", "package": "p", "status": "wontfix"}])


# ---------------------------------------------------------------- bundles

def _bundle(tmp_path: Path, files: dict[str, bytes], name: str = "db.tar.gz") -> Path:
    out = tmp_path / name
    with tarfile.open(out, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


BOLT_HEAD = bytes(16) + BOLT_MAGIC.to_bytes(4, "little") + bytes(44)
META = {"Version": 2, "NextUpdate": "2026-11-30T06:00:00Z", "UpdatedAt": "2026-11-29T06:00:00Z",
        "DownloadedAt": "2026-11-29T07:00:00Z"}


def test_bundle_metadata_is_read(tmp_path: Path) -> None:
    info = inspect_bundle(_bundle(tmp_path, {"trivy.db": BOLT_HEAD, "metadata.json": json.dumps(META).encode()}))
    assert (info.schema_version, info.updated_at, info.next_update) == (2, META["UpdatedAt"], META["NextUpdate"])
    assert info.db_bytes == len(BOLT_HEAD) and info.digest.startswith("sha256:") and len(info.digest) == 71


@pytest.mark.parametrize("files, message", [
    ({"metadata.json": json.dumps(META).encode()}, "trivy.db missing at the archive root"),
    ({"trivy.db": BOLT_HEAD, "metadata.json": json.dumps({**META, "Version": 1}).encode()}, "Version 1"),
    ({"trivy.db": b"not bolt" * 8, "metadata.json": json.dumps(META).encode()}, "not a BoltDB file"),
    ({"trivy.db": BOLT_HEAD, "metadata.json": b"{"}, "metadata.json is not JSON"),
])
def test_bad_bundles_are_refused_with_one_line(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as exc:
        inspect_bundle(_bundle(tmp_path, files))
    assert exc.value.exit_code == 2 and "\n" not in exc.value.one_line()


def test_a_file_that_is_not_a_tar_gz_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "db.tar.gz"
    bad.write_bytes(b"plain text")
    with pytest.raises(UsageError, match="not a gzip-compressed tar archive"):
        inspect_bundle(bad)
    with pytest.raises(UsageError, match="not found"):
        inspect_bundle(tmp_path / "missing.tar.gz")
