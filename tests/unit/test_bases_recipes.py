"""Recipe digests, recipe dependency resolution and the present/pull/build decision of `invoke bases`."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pipeline.core.config import Base, load_config
from pipeline.core.errors import ConfigError
from pipeline.local.bases import (
    LABEL_RECIPE_DIGEST,
    RECIPES_DIR,
    Recipe,
    build_args_for,
    decide,
    facts_by_ref,
    files_digest,
    is_unreachable,
    normalize_ref,
    read_rootfs_conf,
    registry_host,
    resolve_recipes,
)
from pipeline.tools.docker import LocalImage


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """A private copy of the project's recipes, free to edit."""
    d = tmp_path / "recipes"
    shutil.copytree(RECIPES_DIR, d)
    return d


@pytest.fixture
def bases() -> dict[str, Base]:
    """The tree's bases, their upstreams by tag (a team may pin them by digest in pipeline.toml: the tests of
    pinning set their own pins)."""
    return {name: dataclasses.replace(b, upstream=b.upstream.split("@", 1)[0])
            for name, b in load_config(check_files=False).bases.items()}


def test_digest_is_stable_and_content_sensitive(recipes: Path) -> None:
    d = recipes / "redis"
    first = files_digest(d)
    assert first == files_digest(d)
    assert first.startswith("sha256:") and len(first) == 71
    (d / "Dockerfile").write_text((d / "Dockerfile").read_text() + "\n# a comment is a change\n")
    assert files_digest(d) != first


def test_digest_sees_new_files_modes_and_parent_but_not_debris(recipes: Path) -> None:
    d = recipes / "nats"
    base = files_digest(d)
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (d / "notes.swp").write_text("editor swap")
    assert files_digest(d) == base
    (d / "extra.conf").write_text("debug: true\n")
    with_file = files_digest(d)
    assert with_file != base
    (d / "extra.conf").chmod(0o755)
    assert files_digest(d) != with_file
    assert files_digest(d, "sha256:parent-a") != files_digest(d, "sha256:parent-b")


def test_resolve_orders_parents_first_and_chains_digests(recipes: Path, bases: dict[str, Base]) -> None:
    resolved = resolve_recipes(bases, recipes)
    names = list(resolved)
    assert names.index("debian") < min(names.index(n) for n in ("golang", "rust", "postgres", "redis", "nats"))
    assert resolved["debian"].parent is None and resolved["debian"].is_rootfs
    for child in ("golang", "rust", "postgres", "redis", "nats"):
        assert resolved[child].parent == "debian", child
    assert len({r.digest for r in resolved.values()}) == len(resolved)

    # Editing the rootfs recipe changes every digest built on it; editing a leaf changes only that leaf.
    conf = recipes / "debian" / "rootfs.conf"
    conf.write_text(conf.read_text().replace("include = ca-certificates", "include = ca-certificates,tzdata"))
    after_root = resolve_recipes(bases, recipes)
    assert all(after_root[n].digest != resolved[n].digest for n in resolved)
    df = recipes / "redis" / "Dockerfile"
    df.write_text(df.read_text() + "\n# change\n")
    after_leaf = resolve_recipes(bases, recipes)
    changed = {n for n in resolved if after_leaf[n].digest != after_root[n].digest}
    assert changed == {"redis"}


def test_unknown_recipe_and_cycles_are_config_errors(recipes: Path, bases: dict[str, Base]) -> None:
    broken = dict(bases)
    broken["redis"] = Base("redis", "redis:7-alpine", "veza-local/redis:7", "no-such-recipe")
    with pytest.raises(ConfigError, match="no recipe directory"):
        resolve_recipes(broken, recipes)

    # golang builds FROM DEBIAN_IMAGE; make the debian base a Dockerfile recipe FROM GO_IMAGE: a cycle.
    (recipes / "loop").mkdir()
    (recipes / "loop" / "Dockerfile").write_text("ARG GO_IMAGE=x\nFROM ${GO_IMAGE}\n")
    cyclic = dict(bases)
    cyclic["debian"] = Base("debian", "debian:bookworm-slim", "veza-local/debian:bookworm", "loop", "DEBIAN_IMAGE")
    with pytest.raises(ConfigError, match="cycle"):
        resolve_recipes(cyclic, recipes)


def test_rootfs_conf_is_validated(recipes: Path) -> None:
    conf = recipes / "debian" / "rootfs.conf"
    assert read_rootfs_conf(recipes / "debian")["suite"] == "bookworm"
    conf.write_text("suite = bookworm\nnot a pair\n")
    with pytest.raises(ConfigError, match="not key = value"):
        read_rootfs_conf(recipes / "debian")
    conf.write_text("variant = minbase\n")
    with pytest.raises(ConfigError, match="'suite' missing"):
        read_rootfs_conf(recipes / "debian")


def _facts(resolved: dict[str, Recipe], **overrides: LocalImage | None) -> dict[str, LocalImage]:
    images = []
    for name, r in resolved.items():
        if name in overrides:
            o = overrides[name]
            if o is not None:
                images.append(o)
            continue
        images.append(LocalImage(f"sha256:{name}", (normalize_ref(r.base.local),), {LABEL_RECIPE_DIGEST: r.digest}))
    return facts_by_ref(images)


def test_decide_all_present_means_nothing_to_do(bases: dict[str, Base]) -> None:
    resolved = resolve_recipes(bases)
    decisions = decide(resolved, _facts(resolved), force=False)
    assert [d.action for d in decisions] == ["present"] * len(resolved)
    assert [d.action for d in decide(resolved, _facts(resolved), force=True)] == ["rebuild"] * len(resolved)


def test_decide_missing_stale_pulled_and_parent_rebuild(bases: dict[str, Base]) -> None:
    resolved = resolve_recipes(bases)
    pulled = LocalImage("sha256:up", ("redis:7-alpine", "veza-local/redis:7"), {})
    stale = LocalImage("sha256:old", ("veza-local/nats:2.9",), {LABEL_RECIPE_DIGEST: "sha256:old"})
    unlabeled = LocalImage("sha256:hand", ("veza-local/postgres:15",), {})
    by = {d.name: d for d in decide(resolved, _facts(resolved, golang=None, redis=pulled, nats=stale,
                                                     postgres=unlabeled), force=False)}
    assert by["golang"].action == "acquire" and by["golang"].reason == "not present"
    # pulled by a mutable tag: nothing pins what it is, so it is rebuilt from the recipe
    assert by["redis"].action == "rebuild" and "not pinned by digest" in by["redis"].reason
    assert by["nats"].action == "rebuild" and by["nats"].reason == "recipe changed"
    assert by["postgres"].action == "rebuild" and by["postgres"].reason == "no recipe label"
    assert by["rust"].action == "present"

    # A missing Debian base forces everything built on it, even images whose own label still matches.
    by = {d.name: d for d in decide(resolved, _facts(resolved, debian=None), force=False)}
    assert by["debian"].action == "acquire"
    rebuilt = {n for n, d in by.items() if d.action == "rebuild"}
    assert rebuilt == {"golang", "rust", "postgres", "redis", "nats", "prometheus"}
    assert "its base 'debian'" in by["rust"].reason


def test_normalize_ref_matches_engine_repotags() -> None:
    assert normalize_ref("redis") == "redis:latest"
    assert normalize_ref("veza-local/redis:7") == "veza-local/redis:7"
    assert normalize_ref("127.0.0.1:5000/veza/x") == "127.0.0.1:5000/veza/x:latest"
    assert normalize_ref("x@sha256:abc") == "x@sha256:abc"


def test_build_args_map_upstream_args_to_local_refs(bases: dict[str, Base]) -> None:
    args = build_args_for(bases)
    assert args["GO_IMAGE"] == "veza-local/golang:1.27-bookworm"
    assert args["RUST_IMAGE"] == "veza-local/rust:bookworm"
    assert "POSTGRES" not in " ".join(args)          # infra bases have no build arg
    assert build_args_for(bases, ["rust"]) == {"RUST_IMAGE": "veza-local/rust:bookworm"}


def test_registry_host_of_references() -> None:
    assert registry_host("golang:1.22-bookworm") == "docker.io"
    assert registry_host("library/redis:7") == "docker.io"
    assert registry_host("ghcr.io/nats-io/nats:2.9") == "ghcr.io"
    assert registry_host("127.0.0.1:5000/veza/x:1") == "127.0.0.1:5000"
    assert registry_host("localhost/x") == "localhost"


def test_unreachable_registry_is_told_apart_from_an_unknown_image() -> None:
    assert is_unreachable('Get "https://r/v2/": dial tcp: lookup r on 10.0.0.53:53: no such host')
    assert is_unreachable("docker pull x timed out after 30s: docker pull --quiet x")
    assert not is_unreachable("manifest for golang:9.99 not found: manifest unknown")
    assert not is_unreachable("pull access denied for x, repository does not exist")


PIN = "sha256:" + "ab" * 32


def test_a_pulled_upstream_is_present_only_while_it_carries_the_pinned_digest(bases: dict[str, Base]) -> None:
    import dataclasses

    from pipeline.local.bases import upstream_pin

    assert upstream_pin("redis:7-alpine") == ""
    assert upstream_pin(f"redis:7-alpine@{PIN}") == f"redis@{PIN}"
    assert upstream_pin(f"127.0.0.1:5110/lib/redis@{PIN}") == f"127.0.0.1:5110/lib/redis@{PIN}"
    assert upstream_pin(f"127.0.0.1:5110/lib/redis:7@{PIN}") == f"127.0.0.1:5110/lib/redis@{PIN}"
    assert upstream_pin(f"docker.io/library/redis:7@{PIN}") == f"redis@{PIN}"
    assert upstream_pin(f"docker.io/bitnami/redis:7@{PIN}") == f"bitnami/redis@{PIN}"
    pinned = {**bases, "redis": dataclasses.replace(bases["redis"], upstream=f"redis:7-alpine@{PIN}")}
    resolved = resolve_recipes(pinned)
    right = LocalImage("sha256:up", ("veza-local/redis:7",), {}, (f"redis@{PIN}",))
    other = LocalImage("sha256:up2", ("veza-local/redis:7",), {}, ("redis@sha256:" + "cd" * 32,))
    by = {d.name: d for d in decide(resolved, _facts(resolved, redis=right), force=False)}
    assert by["redis"].action == "present" and by["redis"].reason == f"pulled upstream redis@{PIN}"
    by = {d.name: d for d in decide(resolved, _facts(resolved, redis=other), force=False)}
    assert by["redis"].action == "rebuild"


def test_an_infra_base_without_build_facts_is_rebuilt(bases: dict[str, Base]) -> None:
    from pipeline.local.bases import (
        LABEL_BUILDER,
        LABEL_PACKAGES,
        LABEL_PACKAGES_DIGEST,
        missing_build_facts,
        package_label,
        packages_digest,
    )

    resolved = resolve_recipes(bases)
    listed = package_label(["redis-server=5:7.0.15-1~deb12u1", "", "adduser=3.134", "adduser=3.134"])
    assert listed == "adduser=3.134,redis-server=5:7.0.15-1~deb12u1"
    full = {LABEL_RECIPE_DIGEST: resolved["redis"].digest, LABEL_BUILDER: '{"kind":"legacy"}',
            LABEL_PACKAGES: listed, LABEL_PACKAGES_DIGEST: packages_digest(listed),
            "veza.pipeline.layers-digest": "sha256:" + "5" * 64}
    assert missing_build_facts(full) == []
    assert missing_build_facts({**full, LABEL_PACKAGES_DIGEST: packages_digest("adduser=3.135")}) == [
        f"{LABEL_PACKAGES_DIGEST} (does not match the package list)"]
    old = LocalImage("sha256:old", ("veza-local/redis:7",), {LABEL_RECIPE_DIGEST: resolved["redis"].digest})
    need = frozenset({"redis"})
    by = {d.name: d for d in decide(resolved, _facts(resolved, redis=old), force=False, need_facts=need)}
    assert by["redis"].action == "rebuild" and by["redis"].reason.startswith("no build facts (")
    assert LABEL_PACKAGES in by["redis"].reason
    assert by["golang"].action == "present"          # a build base is not signed as infra: its label suffices
    labelled = LocalImage("sha256:new", ("veza-local/redis:7",), full)
    by = {d.name: d for d in decide(resolved, _facts(resolved, redis=labelled), force=False, need_facts=need)}
    assert by["redis"].action == "present"
