"""The service Dockerfiles agree with pipeline.toml and with the image rules (static checks, no engine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.core.config import Service, load_config

CONFIG = load_config()
SERVICES = {s.name: s for s in CONFIG.services}
GO_SERVICES = ("veza-backend-api", "veza-stream-server", "veza-docs")


def _stages(dockerfile: Path) -> list[str]:
    return re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile.read_text(), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_builder_args_default_to_the_configured_upstream(name: str) -> None:
    svc = SERVICES[name]
    text = svc.dockerfile.read_text()
    for bname in svc.bases:
        base = CONFIG.bases[bname]
        # the Dockerfile names the upstream by tag; a pin by digest is the config's (bases pulls by the pin)
        assert f"ARG {base.build_arg}={base.upstream.split('@', 1)[0]}\n" in text, (name, base.build_arg)
        assert _stages(svc.dockerfile)[0] == "${" + base.build_arg + "}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_runtime_rules(name: str) -> None:
    svc: Service = SERVICES[name]
    text = svc.dockerfile.read_text()
    assert _stages(svc.dockerfile)[-1] == "scratch"
    assert "\nUSER 1001:1001\n" in text
    assert f"\nEXPOSE {svc.port}\n" in text
    assert re.search(r'HEALTHCHECK .*CMD \["/app/' + name + r'", "-healthcheck"\]', text)
    assert f'ENTRYPOINT ["/app/{name}"]' in text
    for label in ("source", "revision", "version", "created"):
        assert f"org.opencontainers.image.{label}=" in text
    for arg in ("VERSION", "REVISION", "CREATED", "SOURCE"):
        assert f"ARG {arg}" in text
    assert (svc.context / ".dockerignore").is_file()
    for vol in svc.volumes:
        assert f'VOLUME ["{vol}"]' in text


def test_go_kit_copies_are_identical() -> None:
    copies = {name: (SERVICES[name].context / "kit" / "kit.go").read_text() for name in GO_SERVICES}
    first = copies[GO_SERVICES[0]]
    assert all(text == first for text in copies.values()), "edit kit.go once and copy it to every Go service"


def test_dockerignore_keeps_only_what_the_dockerfile_copies() -> None:
    for svc in CONFIG.services:
        lines = (svc.context / ".dockerignore").read_text().splitlines()
        assert "*" in lines, f"{svc.name}: the .dockerignore should start from an empty context"
