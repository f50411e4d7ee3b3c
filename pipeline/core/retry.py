"""Retries with exponential backoff and full jitter, for transient registry failures only.

An error is retried when it has `transient = True` (RegistryUnavailable); everything else (auth, 4xx,
unknown host) propagates at once: retrying a wrong password only delays the clear message.
When the error carries `retry_after_s` (the registry's Retry-After), the wait is at least that long; a
Retry-After beyond RetryPolicy.retry_after_max_s stops the retries at once (waiting that long inside one
command helps nobody): the error propagates with the registry's wait in its message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5          # total tries, >= 1
    ceiling_s: float = 20.0    # no single wait is longer
    base_s: float = 0.5        # first wait (before jitter)
    retry_after_max_s: float = 120.0   # the longest Retry-After honoured; longer → give up now

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Wait before retry number `retry` (1-based): base*2^(retry-1), capped, jittered into [d/2, d]."""
        d = min(self.ceiling_s, self.base_s * 2.0 ** (retry - 1))
        r = rng.random() if rng is not None else random.random()
        return d * (0.5 + 0.5 * r)


@dataclass
class Attempts:
    """How many tries an operation took (shared across the operations of one image)."""

    tries: int = 0
    retries: int = 0


def is_transient(exc: BaseException) -> bool:
    return bool(getattr(exc, "transient", False))


def asked_wait(exc: BaseException) -> float | None:
    """The wait the failure asked for (a registry's Retry-After, seconds), or None."""
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, (int, float)) else None


def with_retries(fn: Callable[[], T], policy: RetryPolicy, counter: Attempts | None = None,
                 on_retry: Callable[[int, float, BaseException], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call fn until it succeeds, a non-transient error occurs, or the attempts are spent."""
    counter = counter if counter is not None else Attempts()
    for n in range(1, policy.attempts + 1):
        counter.tries += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or n == policy.attempts:
                raise
            asked = asked_wait(exc)
            if asked is not None and asked > policy.retry_after_max_s:
                raise
            wait = max(policy.delay(n), asked or 0.0)
            counter.retries += 1
            if on_retry:
                on_retry(n, wait, exc)
            sleep(wait)
    raise AssertionError("unreachable")
