"""tests.ports under pytest-xdist: each worker hands out only its own share of a range, so two workers never pick
the same port between the free-port check and the bind; outside xdist, the whole range."""

from __future__ import annotations

import pytest

from tests.ports import PortPool, worker_share


def _share(monkeypatch: pytest.MonkeyPatch, worker: str | None, count: str | None, ports: range) -> list[int]:
    for var, value in (("PYTEST_XDIST_WORKER", worker), ("PYTEST_XDIST_WORKER_COUNT", count)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    return list(worker_share(ports))


def test_outside_xdist_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _share(monkeypatch, None, None, range(5100, 5110)) == list(range(5100, 5110))


def test_the_workers_shares_are_disjoint_and_cover_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = range(19600, 19700)
    shares = [_share(monkeypatch, f"gw{i}", "3", ports) for i in range(3)]
    assert all(len(s) >= 33 for s in shares), shares
    assert sorted(p for s in shares for p in s) == list(ports)
    assert not set(shares[0]) & set(shares[1]) and not set(shares[1]) & set(shares[2])


def test_a_pool_takes_ports_of_its_worker_share_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    pool = PortPool(range(19450, 19460))  # this area: 127.0.0.1:19450-19459
    taken = [pool.take(), pool.take()]
    assert all(p % 2 == 1 for p in taken) and taken[0] != taken[1], taken


def test_an_exhausted_pool_hands_out_a_port_that_is_free_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pool = PortPool(range(19456, 19458))  # two ports of this area
    first = {pool.take(), pool.take()}
    assert pool.take() in first   # both are free again: one of them, not "no free port left"
