"""Platforms in pipeline.toml (OCI `os/arch[/variant]` grammar, per service and per environment) and the
OCI image index document of a multi-platform image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.platforms import (
    Platform,
    PlatformError,
    effective_platforms,
    native_platform,
    parse_platform,
    parse_platforms,
    primary_platform,
)
from pipeline.stages.image_index import OCI_INDEX, OCI_MANIFEST, Child, children_of, digest_of, index_document

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


@pytest.mark.parametrize(("text", "want"), [
    ("linux/amd64", AMD64),
    ("linux/arm64", ARM64),
    ("linux/arm64/v8", ARM64),                  # arm64's only variant is its default
    ("linux/arm/v7", Platform("linux", "arm", "v7")),
    ("windows/amd64", Platform("windows", "amd64")),
])
def test_valid_platforms_parse(text: str, want: Platform) -> None:
    assert parse_platform(text) == want


@pytest.mark.parametrize(("text", "problem", "fix"), [
    ("linux", "'linux' is not an OCI platform", "os/arch[/variant]"),
    ("linux/amd64/v3/x", "is not an OCI platform", "os/arch[/variant]"),
    ("Linux/AMD64", "is not an OCI platform", "os/arch"),
    ("linux//amd64", "is not an OCI platform", "os/arch"),
    ("linux/x86_64", "'x86_64' is not a GOARCH name", '"linux/amd64"'),
    ("linux/aarch64", "'aarch64' is not a GOARCH name", '"linux/arm64"'),
    ("plan9/amd64", "unknown os 'plan9'", "linux"),
    ("linux/sparc", "unknown architecture 'sparc'", "arm64"),
    ("linux/arm64/v7", "arm64 has no variant 'v7'", "v8"),
    ("linux/386/v2", "386 has no variant 'v2'", "none"),
])
def test_malformed_platforms_are_refused_with_the_fix(text: str, problem: str, fix: str) -> None:
    with pytest.raises(PlatformError) as err:
        parse_platform(text)
    assert problem in str(err.value)
    assert fix in err.value.fix


def test_a_list_refuses_duplicates_after_normalisation_and_emptiness() -> None:
    assert parse_platforms(["linux/amd64", "linux/arm64"]) == (AMD64, ARM64)
    with pytest.raises(PlatformError, match="listed twice"):
        parse_platforms(["linux/arm64", "linux/arm64/v8"])
    with pytest.raises(PlatformError, match="is empty"):
        parse_platforms([])


@pytest.mark.parametrize(("machine", "want"), [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64"),
                                                ("arm64", "linux/arm64"), ("armv7l", "linux/arm/v7")])
def test_native_platform_maps_uname_to_goarch(machine: str, want: str) -> None:
    assert str(native_platform(machine)) == want


def test_service_list_wins_then_environment_then_native() -> None:
    assert effective_platforms((AMD64,), (AMD64, ARM64), ARM64) == ((AMD64,), "service")
    assert effective_platforms((), (AMD64, ARM64), AMD64) == ((AMD64, ARM64), "environment")
    assert effective_platforms((), (), ARM64) == ((ARM64,), "native")
    assert primary_platform((ARM64, AMD64), AMD64) == AMD64
    assert primary_platform((ARM64,), AMD64) == ARM64


CONFIG = """
[project]
name = "veza"
[registry]
address = "127.0.0.1:5000"
[[services]]
name = "api"
context = "."
dockerfile = "Dockerfile"
port = 8080
{service_extra}
[environments.dev]
namespace = "veza-dev"
values_file = "v.yaml"
stages = ["build", "push"]
tags = ["sha"]
{env_extra}
"""


def _load(tmp_path: Path, service_extra: str = "", env_extra: str = "") -> object:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG.format(service_extra=service_extra, env_extra=env_extra))
    return load_config(path, check_files=False)


def test_config_reads_platforms_per_service_and_per_environment(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'platforms = ["linux/amd64"]', 'platforms = ["linux/amd64", "linux/arm64"]')
    assert cfg.services[0].platforms == (AMD64,)                         # type: ignore[attr-defined]
    assert cfg.environments["dev"].platforms == (AMD64, ARM64)            # type: ignore[attr-defined]
    default = _load(tmp_path)
    assert default.services[0].platforms == () and default.environments["dev"].platforms == ()  # type: ignore


@pytest.mark.parametrize(("service_extra", "env_extra", "line"), [
    ('platforms = ["linux/x86_64"]', "",
     "pipeline.toml: services[0].platforms: 'linux/x86_64': 'x86_64' is not a GOARCH name"),
    ("", 'platforms = ["linux/amd64", "linux/amd64"]',
     "pipeline.toml: environments.dev.platforms: 'linux/amd64' is listed twice"),
    ("", 'platforms = ["linux/arm64", "linux/arm64/v8"]',
     "pipeline.toml: environments.dev.platforms: 'linux/arm64/v8' is listed twice"),
    ("", "platforms = []", "pipeline.toml: environments.dev.platforms: is empty"),
    ("", 'platforms = "linux/amd64"', "pipeline.toml: environments.dev.platforms: expected list of strings"),
])
def test_config_errors_name_the_file_and_key(tmp_path: Path, service_extra: str, env_extra: str,
                                              line: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, service_extra, env_extra)
    assert err.value.message.startswith(line)
    assert err.value.exit_code == 2


def _digest(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def test_index_document_is_canonical_and_names_each_platform() -> None:
    arm = Child(ARM64, _digest(1)[:71], OCI_MANIFEST, 560)
    amd = Child(AMD64, _digest(2)[:71], OCI_MANIFEST, 561)
    body = index_document([arm, amd])
    assert body == index_document([amd, arm])                 # order of the input does not move the digest
    doc = json.loads(body)
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    assert [m["platform"] for m in doc["manifests"]] == [{"architecture": "amd64", "os": "linux"},
                                                           {"architecture": "arm64", "os": "linux"}]
    assert [(m["digest"], m["size"], m["mediaType"]) for m in doc["manifests"]] == [
        (amd.digest, 561, OCI_MANIFEST), (arm.digest, 560, OCI_MANIFEST)]
    assert children_of(body) == {"linux/amd64": amd.digest, "linux/arm64": arm.digest}
    assert digest_of(body).startswith("sha256:") and digest_of(body) != digest_of(index_document([amd]))
    v7 = json.loads(index_document([Child(Platform("linux", "arm", "v7"), amd.digest, OCI_MANIFEST, 1)]))
    assert v7["manifests"][0]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}


@pytest.mark.parametrize(("children", "problem"), [
    ([], "at least one child"),
    ([Child(AMD64, "sha256:" + "a" * 64, OCI_MANIFEST, 1), Child(AMD64, "sha256:" + "b" * 64, OCI_MANIFEST, 1)],
     "appears twice"),
    ([Child(AMD64, "sha256:abc", OCI_MANIFEST, 1)], "not sha256:<64 hex>"),
    ([Child(AMD64, "sha256:" + "a" * 64, OCI_INDEX, 1)], "not an image manifest"),
    ([Child(AMD64, "sha256:" + "a" * 64, OCI_MANIFEST, 0)], "size 0"),
])
def test_index_document_refuses_bad_children(children: list[Child], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        index_document(children)


def test_children_of_refuses_a_plain_manifest_and_skips_attestation_entries() -> None:
    with pytest.raises(ValueError):
        children_of(json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode())
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:" + "b" * 64, "platform": {"os": "unknown", "architecture": "unknown"}}]}).encode()
    assert children_of(body) == {"linux/arm64": "sha256:" + "a" * 64}


def _service(tmp_path: Path, platforms: tuple[Platform, ...] = ()) -> object:
    from pipeline.core.config import Service

    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "main.go").write_text("package main\n")
    df = tmp_path / "Dockerfile"
    df.write_text("FROM scratch\nCOPY . /\n")
    return Service("api", ctx, df, "api", 8080, "/health", "/ready", (), (), (), platforms=platforms)


def test_input_digest_covers_the_platform_list_and_native_only_is_unchanged(tmp_path: Path) -> None:
    from pipeline.stages.plan import InputRecord, input_record
    from pipeline.stages.rebuild_reasons import why_rebuilt

    svc = _service(tmp_path)
    native = input_record(svc, {}, {})  # type: ignore[arg-type]
    both = input_record(svc, {}, {}, platforms=(AMD64, ARM64))  # type: ignore[arg-type]
    arm_first = input_record(svc, {}, {}, platforms=(ARM64, AMD64))  # type: ignore[arg-type]
    assert len({native.digest, both.digest, arm_first.digest}) == 3
    assert native.platforms == () and "platforms" not in native.to_json()
    assert InputRecord.from_json(both.to_json()) == both
    assert why_rebuilt(native, both) == "platforms native → linux/amd64, linux/arm64"
    assert why_rebuilt(both, native) == "platforms linux/amd64, linux/arm64 → native"


def test_service_platforms_and_the_legacy_builder(tmp_path: Path) -> None:
    import dataclasses

    from pipeline.core.errors import UsageError
    from pipeline.stages.build_platforms import check_builder, service_platforms
    from pipeline.tools.buildkit import Builder

    cfg = _load(tmp_path, "", 'platforms = ["linux/amd64", "linux/arm64"]')
    env = cfg.environments["dev"]                                      # type: ignore[attr-defined]
    svc = cfg.services[0]                                              # type: ignore[attr-defined]
    assert service_platforms(svc, env, AMD64) == ((AMD64, ARM64), "environment")
    only_native = dataclasses.replace(svc, platforms=(AMD64,))
    assert service_platforms(only_native, env, AMD64) == ((), "service")   # the single-image path
    assert service_platforms(svc, dataclasses.replace(env, platforms=()), AMD64) == ((), "native")
    assert service_platforms(only_native, dataclasses.replace(env, platforms=()), ARM64) == ((AMD64,), "service")
    legacy = Builder("legacy", "/usr/bin/docker", "28.2.2", "no BuildKit")
    with pytest.raises(UsageError) as err:
        check_builder(svc, env, (AMD64, ARM64), "environment", legacy, AMD64)
    assert err.value.message.startswith("api: platforms linux/amd64, linux/arm64 (environments.dev.platforms in "
                                        "pipeline.toml) need BuildKit")
    assert 'environments.dev.platforms = ["linux/amd64"]' in (err.value.hint or "")
    check_builder(svc, env, (), "service", legacy, AMD64)                 # native only: the legacy builder is fine
    check_builder(svc, env, (AMD64, ARM64), "environment", dataclasses.replace(legacy, kind="buildkit"), AMD64)


def test_build_argv_names_the_target_platform_only_when_asked(tmp_path: Path) -> None:
    from pipeline.tools.buildkit import Builder, build_argv

    bk = Builder("buildkit", "/usr/bin/docker", "20.10.24", "")
    common = {"context": tmp_path, "dockerfile": tmp_path / "Dockerfile", "tags": ["r:t"], "build_args": {},
              "labels": {}, "no_cache": False, "iidfile": tmp_path / "iid"}
    argv, env = build_argv(bk, **common, platform="linux/arm64")  # type: ignore[arg-type]
    assert argv[argv.index("--platform") + 1] == "linux/arm64" and argv[-1] == str(tmp_path)
    assert env == {"DOCKER_BUILDKIT": "1"}
    assert "--platform" not in build_argv(bk, **common)[0]  # type: ignore[arg-type]


def test_plan_lines_say_which_service_is_not_built_for_a_platform(tmp_path: Path) -> None:
    """The Rust service kept to amd64 while the environment asks for both: one clear line in the plan."""
    import dataclasses

    from pipeline.stages.build import platform_lines
    from pipeline.stages.plan import BuildPlan, ServicePlan

    cfg = _load(tmp_path, "", 'platforms = ["linux/amd64", "linux/arm64"]')
    env = cfg.environments["dev"]                                      # type: ignore[attr-defined]
    svc = cfg.services[0]                                              # type: ignore[attr-defined]
    chat = dataclasses.replace(svc, name="chat", platforms=(AMD64,))
    plan = BuildPlan(env, (ServicePlan(svc, "r/api", ("t",), "sha256:x", {}, platforms=(AMD64, ARM64),
                                       platforms_from="environment"),
                           ServicePlan(chat, "r/chat", ("t",), "sha256:y", {}, platforms=(),
                                       platforms_from="service")))
    assert platform_lines(plan) == [
        "platforms: api: linux/amd64, linux/arm64 (environments.dev.platforms)",
        f"platforms: chat: {native_platform()} only (services.chat.platforms); not built for "
        + ", ".join(p for p in ("linux/amd64", "linux/arm64") if p != str(native_platform()))]
    assert platform_lines(dataclasses.replace(plan, env=dataclasses.replace(env, platforms=()), services=(
        dataclasses.replace(plan.services[0], platforms=(), platforms_from="native"),))) == []
