"""The lanes of `invoke test`: pytest-xdist with three workers and `--lanes` (pipeline/machine/testrun.py).
Registered in tests/conftest.py (pytest_plugins).

Every test that uses the local cluster (or the machine's registry through its fixture) runs in one lane, one at a
time and in file order: they share one cluster, which some of them stop and start. A cluster test marked
`cluster_parallel` (its own namespace, registry and ports: the Helm 4 sequence of a file that also runs Helm 3's)
runs in a second cluster lane, beside the first; a test that stops the cluster holds it exclusively meanwhile
(cluster_fixtures.cluster_use). Every other test of tests/integration and tests/e2e runs in a third lane, in file
order, as in a serial run. The engine lane shares only the engine with the cluster lanes: they alone use the
cluster, the machine's registry (127.0.0.1:5000) and the cluster areas' ports; tests.ports gives each worker its
own share of a range. Unit tests belong to no lane: any worker takes them, one by one. Most of a cluster test's
time is waiting on the cluster, so the lanes fit two cores.

How: each worker writes every test's lane to a file the controller names (workerinput); the controller's
scheduler (xdist's LoadScopeScheduling, one work unit per lane) reads it. xdist's own `--dist loadgroup` cannot
do this here: it renames items' nodeids, which pytest 9.2 no longer lets a plugin do.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

CLUSTER_LANE, CLUSTER_PARALLEL_LANE, ENGINE_LANE = "lane:cluster", "lane:cluster-parallel", "lane:engine"
_FILE_KEY = "veza_lanes_file"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lanes", action="store_true", default=False,
                     help="with -n N: the tests that use the cluster in one lane, the other engine tests in another "
                          "(tests/lanes.py)")


# The shared daemons of the machine: a test that uses one of them through its fixture runs in the cluster lane,
# whose releases use both (the machine's registry is where every e2e release pushes).
SHARED_DAEMON_FIXTURES = ("local_cluster", "machine_registry")


def uses_cluster(item: pytest.Item) -> bool:
    """A test of the cluster lane: marked `cluster`, or using the local cluster or the machine's registry
    (SHARED_DAEMON_FIXTURES)."""
    names = getattr(item, "fixturenames", ())
    return item.get_closest_marker("cluster") is not None or any(f in names for f in SHARED_DAEMON_FIXTURES)


def lane_of(item: pytest.Item) -> str | None:
    """The lane of a test (None: a unit test, free to run on any worker)."""
    if uses_cluster(item):
        return CLUSTER_PARALLEL_LANE if item.get_closest_marker("cluster_parallel") else CLUSTER_LANE
    return None if item.nodeid.startswith("tests/unit/") else ENGINE_LANE


def _lanes_file(config: pytest.Config) -> Path | None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Path(workerinput[_FILE_KEY]) if _FILE_KEY in workerinput else None
    path: Path | None = getattr(config, "_veza_lanes_file", None)
    return path


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("lanes") and not hasattr(config, "workerinput"):
        fd, name = tempfile.mkstemp(prefix="veza-lanes-", suffix=".json")
        os.close(fd)
        config._veza_lanes_file = Path(name)  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and (path := _lanes_file(config)) is not None:
        path.unlink(missing_ok=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller: tell each worker where to write the lanes."""
    if (path := _lanes_file(node.config)) is not None:
        node.workerinput[_FILE_KEY] = str(path)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None, None, None]:
    """Worker, after every other hook (pytest's reordering keeps module-scoped parameters together): the cluster
    lanes' tests first, then the engine lane's, then the unit tests, so the longest lane starts at once (a stable
    sort: each lane keeps its order, but for the files that stop the cluster), and every test's lane written for
    the controller's scheduler."""
    yield
    path = _lanes_file(config)
    if path is None or not hasattr(config, "workerinput"):
        return
    # A file with a test that stops the cluster (cluster_to_myself) goes to the end of the cluster lane, whole:
    # by then the parallel lane is done, so nobody waits for the exclusive hold.
    stopping = {item.path for item in items if "cluster_to_myself" in getattr(item, "fixturenames", ())}
    # The three lanes are the first three work units: xdist's scope scheduler gives one unit to each worker
    # first, so each lane starts on a worker of its own (with the unit tests first, the engine lane could fall to
    # whichever worker came free, the cluster lane's included).
    order = {CLUSTER_LANE: 0, CLUSTER_PARALLEL_LANE: 1, ENGINE_LANE: 2}
    items.sort(key=lambda item: (order.get(lane_of(item) or "", 3), item.path in stopping))
    tmp = path.with_name(f"{path.name}.{config.workerinput['workerid']}")  # type: ignore[attr-defined]
    tmp.write_text(json.dumps({item.nodeid: lane_of(item) for item in items}))
    tmp.replace(path)  # every worker collects the same tests: whichever write is last, it is complete


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Controller, with --lanes: xdist's scope scheduling with one work unit per lane (a unit test is its own)."""
    path = _lanes_file(config)
    if path is None:
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):  # type: ignore[misc]
        _lanes: dict[str, str | None] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._lanes is None:  # read once every worker has collected (xdist schedules only then)
                self._lanes = json.loads(path.read_text())
            return self._lanes.get(nodeid) or nodeid

    return LaneScheduling(config, log)



class _LaneClock:
    """Controller: each lane's summed test time and each worker's span from its first test's start to its last
    test's end, for the terminal summary (which lane is the suite's critical path)."""

    def __init__(self, lanes_file: Path) -> None:
        self.lanes_file = lanes_file
        self.lane_seconds: dict[str, float] = {}
        self.lane_tests: dict[str, int] = {}
        self.worker_span: dict[str, tuple[float, float]] = {}
        self._lanes: dict[str, str | None] | None = None

    def add(self, report: pytest.TestReport) -> None:
        if self._lanes is None and self.lanes_file.exists():
            self._lanes = json.loads(self.lanes_file.read_text() or "{}")
        lane = (self._lanes or {}).get(report.nodeid) or "unit"
        self.lane_seconds[lane] = self.lane_seconds.get(lane, 0.0) + report.duration
        if report.when == "call":
            self.lane_tests[lane] = self.lane_tests.get(lane, 0) + 1
        worker = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None)
        if worker is not None:
            first, last = self.worker_span.get(worker, (report.start, report.stop))
            self.worker_span[worker] = (min(first, report.start), max(last, report.stop))


_clock: list[_LaneClock] = []   # the controller's, when --lanes is on


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput") and (path := _lanes_file(session.config)) is not None:
        _clock.append(_LaneClock(path))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _clock:
        _clock[0].add(report)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """With --lanes, on the controller: seconds per lane (setup + call + teardown summed) and each worker's span."""
    if not _clock:
        return
    clock = _clock[0]
    terminalreporter.section("lanes")
    for lane, seconds in sorted(clock.lane_seconds.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{lane}: {seconds:.0f} s summed over {clock.lane_tests.get(lane, 0)} tests")
    for worker, (first, last) in sorted(clock.worker_span.items()):
        terminalreporter.write_line(f"{worker}: {last - first:.0f} s from its first test's start to its last's end")
