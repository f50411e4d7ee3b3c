"""The build adapter's pure parts: legacy Dockerfile translation, argv per builder, sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import UsageError
from pipeline.tools.buildkit import Builder, build_argv, detect, legacy_dockerfile

ROOT = Path(__file__).resolve().parents[2]


def test_legacy_dockerfile_drops_buildkit_flags_only() -> None:
    text = ("ARG GO_IMAGE=golang\nFROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build\n"
            "RUN --mount=type=cache,target=/root/.cache/go-build \\\n    --mount=type=cache,target=/go/pkg/mod \\\n"
            "    go build -o /out/x .\nRUN echo --mount=not-a-flag\nFROM scratch\n")
    assert legacy_dockerfile(text) == ("ARG GO_IMAGE=golang\nFROM ${GO_IMAGE} AS build\n"
                                       "RUN go build -o /out/x .\nRUN echo --mount=not-a-flag\nFROM scratch\n")


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "dockerfiles").glob("*.Dockerfile")))
def test_service_dockerfiles_use_cache_mounts_and_translate(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "--mount=type=cache" in text and "--platform=$BUILDPLATFORM" in text
    legacy = legacy_dockerfile(text)
    assert "--mount" not in legacy and "--platform" not in legacy
    # Same steps in the same order: only the flags differ.
    steps = [ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert steps == [ln.split()[0] for ln in legacy.splitlines() if ln and not ln.startswith((" ", "#"))]


def test_argv_per_builder(tmp_path: Path) -> None:
    kw = dict(context=tmp_path, dockerfile=tmp_path / "D", tags=["r:t"], build_args={"A": "1"},
              labels={"l": "v"}, no_cache=True, iidfile=tmp_path / "iid")
    argv, env = build_argv(Builder("buildkit", "/usr/bin/docker", "20.10.24", ""), **kw)  # type: ignore[arg-type]
    assert argv[:4] == ["/usr/bin/docker", "build", "--progress", "plain"] and env == {"DOCKER_BUILDKIT": "1"}
    assert "--no-cache" in argv and argv[-1] == str(tmp_path)
    argv, env = build_argv(Builder("buildx", "docker", "v0.12", ""), **kw)  # type: ignore[arg-type]
    assert argv[:5] == ["docker", "buildx", "build", "--load", "--progress"] and env == {}
    argv, env = build_argv(Builder("legacy", "docker", "28.2.2", ""), **kw)  # type: ignore[arg-type]
    assert argv[:2] == ["docker", "build"] and "--progress" not in argv and env == {"DOCKER_BUILDKIT": "0"}


def test_unknown_builder_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        detect("kaniko")


def test_cache_over_cap_is_least_recently_used_first() -> None:
    from pipeline.machine.prune import cache_over_cap
    from pipeline.tools.docker import CacheRecord

    recs = [CacheRecord("new", 400, False, "2026-11-29T10:00:00Z", ""),
            CacheRecord("old", 300, False, "2026-11-01T10:00:00Z", ""),
            CacheRecord("busy", 500, True, "2026-10-01T10:00:00Z", ""),
            CacheRecord("mid", 200, False, "2026-11-15T10:00:00Z", "")]
    assert [r.id for r in cache_over_cap(recs, 1400)] == []
    assert [r.id for r in cache_over_cap(recs, 1000)] == ["old", "mid"]   # the in-use record stays
    assert [r.id for r in cache_over_cap(recs, 0)] == ["old", "mid", "new"]


def test_old_cache_tags_keeps_newest_and_protected() -> None:
    from pipeline.machine.prune import old_cache_tags

    images = [{"Id": "sha256:a", "Created": 1, "RepoTags": ["c/svc:in-a"]},
              {"Id": "sha256:b", "Created": 2, "RepoTags": ["c/svc:in-b", "127.0.0.1:5000/x/svc:sha-1"]},
              {"Id": "sha256:c", "Created": 3, "RepoTags": ["c/svc:in-c"]},
              {"Id": "sha256:d", "Created": 1, "RepoTags": ["c/other:in-d"]},
              {"Id": "sha256:e", "Created": 0, "RepoTags": ["elsewhere/svc:in-e"]}]
    assert old_cache_tags(images, "c", 1, protected={"sha256:a"}) == [("c/svc:in-b", "sha256:b")]
    assert old_cache_tags(images, "c", 3, protected=set()) == []


def test_old_cache_tags_keep_the_newest_per_platform() -> None:
    """A multi-platform build leaves one cache tag per platform (`in-<32 hex>[-<platform>]`): keeping the
    newest one per service must keep the newest arm64 child too, not only the newest tag of any platform."""
    from pipeline.machine.prune import old_cache_tags

    def tag(n: int, suffix: str = "") -> str:
        return f"c/svc:in-{str(n) * 32}{suffix}"

    images = [{"Id": "sha256:a1", "Created": 1, "RepoTags": [tag(1)]},
              {"Id": "sha256:b1", "Created": 1, "RepoTags": [tag(1, "-linux-arm64")]},
              {"Id": "sha256:a2", "Created": 3, "RepoTags": [tag(2)]},
              {"Id": "sha256:b2", "Created": 2, "RepoTags": [tag(2, "-linux-arm64")]}]
    assert old_cache_tags(images, "c", 1, protected=set()) == [(tag(1), "sha256:a1"),
                                                              (tag(1, "-linux-arm64"), "sha256:b1")]
    assert old_cache_tags(images, "c", 1, protected={"sha256:b1"}) == [(tag(1), "sha256:a1")]
