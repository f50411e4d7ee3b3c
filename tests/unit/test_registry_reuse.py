"""The reuse decision of the build plan (pipeline/stages/registry_reuse.decide), and the input tag's shape."""

from __future__ import annotations

import re

import pytest

from pipeline.stages.registry_reuse import Lookup, RegistryImage, decide, input_tag

DIGEST = "sha256:" + "ab" * 32
IMAGE = RegistryImage("127.0.0.1:5000/veza-dev/veza-docs", "sha256:" + "cd" * 32, "sha256:" + "ef" * 32)
FOUND = Lookup(IMAGE)
ABSENT = Lookup(None, "no image for this input digest in the registry (127.0.0.1:5000/veza-dev/veza-docs:in-abab…)")
DOWN = Lookup(None, "registry 127.0.0.1:5000 did not answer the reuse lookup (connection refused)")
LOCAL = "sha256:" + "12" * 32


def test_the_registry_image_is_reused_when_the_engine_has_none() -> None:
    d = decide(input_digest=DIGEST, base_missing=False, no_cache=False, local_image=None, registry=FOUND)
    assert (d.action, d.source) == ("reuse", "registry")
    assert d.reason == f"reused from {IMAGE.ref} (input digest {DIGEST[:19]}…)"


def test_the_engine_image_wins_over_the_registry() -> None:
    d = decide(input_digest=DIGEST, base_missing=False, no_cache=False, local_image=LOCAL, registry=FOUND)
    assert (d.action, d.source) == ("reuse", "engine")
    assert LOCAL[7:19] in d.reason


@pytest.mark.parametrize("lookup", [ABSENT, DOWN])
def test_no_image_in_the_registry_or_no_answer_builds_and_says_why(lookup: Lookup) -> None:
    d = decide(input_digest=DIGEST, base_missing=False, no_cache=False, local_image=None, registry=lookup)
    assert d.action == "build" and d.source == ""
    assert lookup.note in d.reason


@pytest.mark.parametrize("base_missing,no_cache", [(True, False), (False, True), (True, True)])
def test_a_missing_base_or_no_cache_builds_even_when_the_registry_has_it(base_missing: bool, no_cache: bool) -> None:
    d = decide(input_digest=DIGEST, base_missing=base_missing, no_cache=no_cache, local_image=LOCAL, registry=FOUND)
    assert d.action == "build"
    assert ("base image missing" in d.reason) == base_missing
    assert (d.reason == "--no-cache") == (no_cache and not base_missing)


def test_not_asked_builds_with_the_plain_reason() -> None:
    d = decide(input_digest=DIGEST, base_missing=False, no_cache=False, local_image=None, registry=None)
    assert (d.action, d.reason) == ("build", "no image with this input digest")


def test_the_input_tag_names_the_whole_digest_and_is_a_valid_tag() -> None:
    tag = input_tag(DIGEST)
    assert tag == "in-" + "ab" * 32
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag)   # the distribution spec's tag grammar
    assert input_tag("sha256:" + "ab" * 31 + "ac") != tag
