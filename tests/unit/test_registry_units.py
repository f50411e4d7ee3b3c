"""Pure logic of the registry area: retry policy, error classification, tag computation, references."""

from __future__ import annotations

import random

import pytest

from pipeline.core.config import Environment
from pipeline.core.errors import UsageError
from pipeline.core.retry import Attempts, RetryPolicy, with_retries
from pipeline.local.registry import htpasswd_line
from pipeline.release.promote import env_tags
from pipeline.tools.docker_push import classify
from pipeline.tools.registry_api import RegistryRequestError, RegistryUnavailable, split_repository


def _env(tags: tuple[str, ...]) -> Environment:
    from pathlib import Path

    return Environment(name="prod", registry="127.0.0.1:5000", registry_namespace="veza", kube_context="",
                       namespace="veza-prod", helm_release="veza", values_file=Path("v.yaml"), stages=("push",),
                       tags=tags, scan_threshold="HIGH", ignore_unfixed=False, require_clean_tree=False,
                       require_release_tag=False, confirm=False)


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    p = RetryPolicy(attempts=6, ceiling_s=3.0, base_s=0.5)
    rng = random.Random(1)
    delays = [p.delay(n, rng) for n in range(1, 7)]
    for n, d in enumerate(delays, start=1):
        full = min(3.0, 0.5 * 2 ** (n - 1))
        assert full / 2 <= d <= full
    assert max(delays) <= 3.0 and delays[4] >= 1.5


def test_transient_errors_are_retried_until_success() -> None:
    calls, waits = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryUnavailable("connection reset")
        return "ok"

    counter = Attempts()
    assert with_retries(flaky, RetryPolicy(attempts=5), counter, sleep=waits.append) == "ok"
    assert counter.tries == 3 and counter.retries == 2 and len(waits) == 2


def test_permanent_errors_fail_at_once_and_attempts_are_bounded() -> None:
    counter = Attempts()
    with pytest.raises(RegistryRequestError):
        with_retries(lambda: (_ for _ in ()).throw(RegistryRequestError("404")), RetryPolicy(attempts=5),
                     counter, sleep=lambda s: None)
    assert counter.tries == 1
    counter = Attempts()
    with pytest.raises(RegistryUnavailable):
        with_retries(lambda: (_ for _ in ()).throw(RegistryUnavailable("503")), RetryPolicy(attempts=3),
                     counter, sleep=lambda s: None)
    assert counter.tries == 3 and counter.retries == 2


@pytest.mark.parametrize("message,kind", [
    ("unauthorized: authentication required", "auth"),
    ("denied: requested access to the resource is denied", "auth"),
    ('Get "https://nohost.invalid/v2/": dial tcp: lookup nohost.invalid: no such host', "unknown-host"),
    ("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", "transient"),
    ("received unexpected HTTP status: 503 Service Unavailable", "transient"),
    ("net/http: TLS handshake timeout", "transient"),
    ("manifest invalid: manifest invalid", "permanent"),
])
def test_push_error_classification(message: str, kind: str) -> None:
    assert classify(message) == kind


def test_env_tags_from_version_facts() -> None:
    release = {"version": "1.4.2", "release": True, "on_tag": True, "short_sha": "abcdef12", "branch": "feature/x"}
    assert env_tags(_env(("semver", "semver-minor", "semver-major")), release) == ["1.4.2", "1.4", "1"]
    assert env_tags(_env(("sha", "branch")), release) == ["sha-abcdef12", "feature-x"]
    dev = {"version": "0.3.1-dev.2.sha-abcdef12", "release": False, "short_sha": "abcdef12", "branch": "main"}
    assert env_tags(_env(("semver", "semver-minor", "semver-major")), dev) == ["0.3.1-dev.2.sha-abcdef12"]


def test_references() -> None:
    assert split_repository("127.0.0.1:5000/veza/api") == ("127.0.0.1:5000", "veza/api")
    with pytest.raises(RegistryRequestError):
        split_repository("veza/api")


def test_htpasswd_line_is_bcrypt_and_verifies() -> None:
    import bcrypt

    line = htpasswd_line("ci", "s3cret-pw")
    user, _, hashed = line.partition(":")
    assert user == "ci" and hashed.startswith("$2") and "s3cret-pw" not in line
    assert bcrypt.checkpw(b"s3cret-pw", hashed.encode())
    with pytest.raises(UsageError):
        htpasswd_line("a:b", "x")
