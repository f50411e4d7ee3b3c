"""tests/lanes.py under pytest-xdist as `invoke test` runs it (--lanes --no-loadscope-reorder, PYTEST_WORKERS): the
tests that use the cluster run on one worker, in file order, before that worker takes anything else, and a file
that stops the cluster last; the `cluster_parallel` ones (a module-scoped parameter) on another worker, in order;
the other engine-backed tests on one worker, in file order; unit tests anywhere. A tiny suite in a temporary
directory, run in a subprocess (pytester), records where and in which order each ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.paths import ROOT
from pipeline.machine.testrun import PYTEST_WORKERS

RECORD = '''
import json, os, pytest
def record(request):
    with open(os.environ["LANES_LOG"], "a") as f:
        f.write(json.dumps([os.environ.get("PYTEST_XDIST_WORKER"), request.node.nodeid.split("@")[0]]) + "\\n")
'''


def _suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORD + '''
@pytest.fixture(scope="session")
def local_cluster():
    return "kubeconfig"
@pytest.fixture(scope="session")
def machine_registry():
    return "127.0.0.1:5000"
@pytest.fixture
def cluster_to_myself(local_cluster):
    return local_cluster
@pytest.fixture(autouse=True)
def _record(request):
    record(request)
''')
    pytester.makeini("[pytest]\nmarkers =\n    cluster: uses the cluster\n    cluster_parallel: beside\n")
    files = {
        "tests/integration/test_lane_a.py": "import pytest\n"
                                            "@pytest.mark.cluster\ndef test_a1(): pass\n"
                                            "def test_a2(): pass\n"
                                            "@pytest.mark.cluster\ndef test_a3(): pass\n",
        "tests/integration/test_lane_b.py": "".join(f"def test_b{i}(): pass\n" for i in range(4)),
        "tests/e2e/test_lane_c.py": "".join(f"def test_c{i}(local_cluster): pass\n" for i in range(2))
                                    + "def test_c2(machine_registry): pass\n",
        "tests/integration/test_lane_d.py": "import pytest\n"
                                            "@pytest.fixture(scope='module', params=['h3', pytest.param('h4', "
                                            "marks=pytest.mark.cluster_parallel)])\n"
                                            "def helm(request, local_cluster): return request.param\n"
                                            "def test_d1(helm): pass\ndef test_d2(helm): pass\n",
        "tests/integration/test_lane_b0.py": "def test_stops(cluster_to_myself): pass\n",
        "tests/unit/test_lane_u.py": "".join(f"def test_u{i}(): pass\n" for i in range(6)),
    }
    for rel, text in files.items():
        path = pytester.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cluster_tests_share_one_worker_in_order_beside_the_engine_lane(pytester: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _suite(pytester)
    log = pytester.path / "lanes.jsonl"
    monkeypatch.setenv("LANES_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    res = pytester.runpytest_subprocess("-p", "tests.lanes", "-n", str(PYTEST_WORKERS), "--lanes",
                                        "--no-loadscope-reorder", "-p", "no:cacheprovider",
                                        "tests/unit", "tests/integration", "tests/e2e")  # testrun.py's order
    res.assert_outcomes(passed=21)
    res.stdout.fnmatch_lines_random([   # the summary that says which lane is the critical path
        "lane:cluster: * s summed over 8 tests", "lane:cluster-parallel: * s summed over 2 tests",
        "lane:engine: * s summed over 5 tests", "unit: * s summed over 6 tests",
        "gw0: * s from its first test's start to its last's end"])
    ran = [json.loads(line) for line in log.read_text().splitlines()]
    by_worker: dict[str, list[str]] = {}
    for worker, nodeid in ran:
        by_worker.setdefault(worker, []).append(nodeid)
    cluster = ["tests/integration/test_lane_a.py::test_a1", "tests/integration/test_lane_a.py::test_a3",
               "tests/integration/test_lane_d.py::test_d1[h3]", "tests/integration/test_lane_d.py::test_d2[h3]",
               "tests/e2e/test_lane_c.py::test_c0", "tests/e2e/test_lane_c.py::test_c1",
               "tests/e2e/test_lane_c.py::test_c2",
               "tests/integration/test_lane_b0.py::test_stops"]  # the file that stops the cluster: last
    parallel = ["tests/integration/test_lane_d.py::test_d1[h4]", "tests/integration/test_lane_d.py::test_d2[h4]"]
    engine = ["tests/integration/test_lane_a.py::test_a2"] + [f"tests/integration/test_lane_b.py::test_b{i}"
                                                               for i in range(4)]
    (cluster_worker,) = {w for w, n in ran if n in cluster}
    (engine_worker,) = {w for w, n in ran if n in engine}
    (parallel_worker,) = {w for w, n in ran if n in parallel}
    assert cluster_worker not in (engine_worker, parallel_worker), json.dumps(by_worker)
    assert [n for n in by_worker[parallel_worker] if n in parallel] == parallel, by_worker
    assert by_worker[cluster_worker][:len(cluster)] == cluster, by_worker  # first, in file order
    assert [n for n in by_worker[engine_worker] if n in engine] == engine, by_worker
    assert sorted(n for _, n in ran) == sorted(set(n for _, n in ran)), "a test ran twice"


def test_without_xdist_the_order_is_the_collection_order(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _suite(pytester)
    log: Path = pytester.path / "lanes.jsonl"
    monkeypatch.setenv("LANES_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    res = pytester.runpytest_subprocess("-p", "tests.lanes", "-p", "no:cacheprovider", "tests/integration")
    res.assert_outcomes(passed=12)
    assert [n.split("::")[1] for _, n in map(json.loads, log.read_text().splitlines())] == [
        "test_a1", "test_a2", "test_a3", "test_b0", "test_b1", "test_b2", "test_b3", "test_stops",
        "test_d1[h3]", "test_d2[h3]", "test_d1[h4]", "test_d2[h4]"]
