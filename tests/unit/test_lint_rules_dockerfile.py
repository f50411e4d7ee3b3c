"""Dockerfile pitfalls: each rule fires on a minimal bad example and stays silent on its corrected twin."""

from __future__ import annotations

import pytest

from pipeline.lint.rules import dockerfile_rules, is_fat_image, parse_dockerfile


def rules_of(text: str) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in dockerfile_rules(text, "Dockerfile")]


GOOD = "FROM golang:1.22 AS build\nRUN go build -o /app .\n\nFROM scratch\nCOPY --from=build /app /app\nUSER 10001\n"


def test_corrected_multistage_nonroot_is_silent() -> None:
    assert rules_of(GOOD) == []


@pytest.mark.parametrize(("text", "line"), [
    ("FROM scratch\nCOPY app /app\n", 1),                      # no USER at all
    ("FROM scratch\nUSER 0\n", 2),
    ("FROM scratch\nUSER root:root\n", 2),
    ("FROM alpine:3 AS b\nUSER 1000\nFROM scratch\nCOPY --from=b / /\n", 3),   # USER only in the builder
])
def test_vz001_runs_as_root(text: str, line: int) -> None:
    assert ("VZ001", line) in rules_of(text)


def test_vz001_twin_user_in_final_stage() -> None:
    assert rules_of("FROM scratch\nUSER 0\nRUN x\nUSER 10001\n") == []
    assert rules_of("FROM scratch\nUSER app:app\n") == []


@pytest.mark.parametrize("base", ["debian:bookworm", "ubuntu:22.04", "golang:1.22-bookworm", "python:3.12",
                                  "node:20", "docker.io/library/rust:1.77", "veza-local/golang:bookworm"])
def test_vz002_fat_single_stage(base: str) -> None:
    text = f"FROM {base}\nCOPY . /app\nUSER 1000\n"
    assert rules_of(text) == [("VZ002", 1)]


@pytest.mark.parametrize("base", ["debian:bookworm-slim", "python:3.12-slim", "alpine:3.20", "scratch",
                                  "gcr.io/distroless/static:nonroot"])
def test_vz002_twin_slim_bases(base: str) -> None:
    assert rules_of(f"FROM {base}\nUSER 1000\n") == []


def test_vz002_resolves_arg_and_ignores_multistage() -> None:
    assert rules_of("ARG GO_IMAGE=golang:1.22\nFROM ${GO_IMAGE}\nUSER 1000\n") == [("VZ002", 2)]
    assert rules_of("ARG GO_IMAGE=golang:1.22\nFROM ${GO_IMAGE} AS b\nFROM scratch\nUSER 1000\n") == []


@pytest.mark.parametrize("instr", ["ENV DB_PASSWORD=hunter2", "ENV API_TOKEN hunter2", "ARG GITHUB_TOKEN=ghp_abc",
                                   'ENV A=1 JWT_SECRET="s e c r e t"', "ENV AWS_SECRET_ACCESS_KEY=abc",
                                   "ENV SIGNING_KEY=abc"])
def test_vz003_plaintext_secret(instr: str) -> None:
    assert ("VZ003", 2) in rules_of(f"FROM scratch\n{instr}\nUSER 1000\n")


@pytest.mark.parametrize("instr", ["ARG GITHUB_TOKEN", "ENV DB_PASSWORD_FILE=/run/secrets/db",
                                   "ENV DB_PASSWORD=${DB_PASSWORD}", "ENV DB_PASSWORD=", "ENV KEYBOARD=us",
                                   "ENV MONKEY=banana", "ENV TOKEN_TTL=3600"])
def test_vz003_twins(instr: str) -> None:
    assert rules_of(f"FROM scratch\n{instr}\nUSER 1000\n") == []


def test_parser_continuations_and_comments() -> None:
    ins = parse_dockerfile("# c\nFROM x \\\n  AS y\n\nRUN a \\\n# inner comment\n  && b\nUSER 1\n")
    assert [(i.line, i.keyword) for i in ins] == [(2, "FROM"), (5, "RUN"), (8, "USER")]
    assert ins[1].args.split() == ["a", "&&", "b"]   # BuildKit keeps the inner whitespace


def test_fat_image_detection() -> None:
    assert is_fat_image("127.0.0.1:5000/library/debian:12")
    assert not is_fat_image("127.0.0.1:5000/veza/backend:1.0")


def test_heredoc_bodies_are_not_instructions() -> None:
    text = ("FROM python:3.12-slim\nUSER 10001\nCOPY <<PY /app/main.py\nfrom http.server import HTTPServer\nPY\n"
            "CMD [\"python\", \"/app/main.py\"]\n")
    assert rules_of(text) == []
    hidden = "FROM nginx:1.27\nCOPY <<CONF /etc/nginx.conf\nuser nginx;\nCONF\n"
    assert [(r, line) for r, line in rules_of(hidden)] == [("VZ001", 1)]


def test_user_is_inherited_from_the_parent_stage() -> None:
    assert rules_of("FROM debian:bookworm-slim AS rt\nUSER 10001\nFROM rt\nCOPY a /a\n") == []
    assert rules_of("FROM debian:bookworm-slim AS rt\nUSER root\nFROM rt\nCOPY a /a\n") == [("VZ001", 2)]
    assert rules_of("ARG UID=0\nFROM scratch\nARG UID\nUSER ${UID}\n") == [("VZ001", 4)]   # ARG scoping


def test_heredocs_get_stand_ins_for_hadolint_with_lines_in_place() -> None:
    from pipeline.lint.dockerfile import without_heredoc_bodies

    text = "FROM a\nCOPY <<PY /app/x.py\nfrom os import path\nPY\nRUN <<EOT bash\n  echo hi\nEOT\nUSER 1\n"
    assert without_heredoc_bodies(text) == "FROM a\nCOPY heredoc-PY /app/x.py\n\n\nRUN true\n\n\nUSER 1\n"
    assert without_heredoc_bodies("FROM a\nUSER 1\n") is None


def test_a_blank_line_does_not_end_a_continuation() -> None:
    assert rules_of("FROM debian:bookworm-slim\nRUN echo \\\n\nUSER 10001\n") == [("VZ001", 1)]
