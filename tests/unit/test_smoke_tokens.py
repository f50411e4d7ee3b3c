"""The bearer token the api-roundtrip smoke check sends: HS256, `sub` and `exp`, as services/backend-api/auth.go
requires (the Go side's own tests check it refuses the rest)."""

from __future__ import annotations

import time

import jwt
import pytest

from pipeline.stages.functional_checks import bearer_token

SECRET = "s" * 32


def test_the_token_is_hs256_with_subject_and_expiry() -> None:
    tok = bearer_token(SECRET, "smoke", ttl_s=60)
    assert jwt.get_unverified_header(tok)["alg"] == "HS256"
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    assert claims["sub"] == "smoke" and 0 < claims["exp"] - time.time() <= 60


def test_a_token_signed_with_another_secret_does_not_verify() -> None:
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(bearer_token("t" * 32, "smoke"), SECRET, algorithms=["HS256"])
