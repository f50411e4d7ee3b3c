"""Where the change loop's time goes (issue 28, item 1): one `invoke build push` taken apart.

    .venv/bin/python bench/where_time_goes.py [--runs 3] [--cases go,noop]

In a temporary clone set up as bench/change_loop.py does (local environment, own registry namespace, the
embedded registry on 127.0.0.1:5000, bytecode compiled once), after one warm-up `invoke build push`:
  go    one line appended to services/backend-api/main.go and committed before each sample;
  noop  nothing changed.
Each sample is one `invoke build push` under `strace --seccomp-bpf -f -ttt -e trace=execve`
(only process starts and ends are stopped on, so the cost is small; the bench prints the run's wall time with
and without strace) and the pipeline's own trace (`.pipeline/local/runs/*/trace.otlp.jsonl`: run, stage,
per-service and tool spans). Both clocks are the wall clock, so the two merge into one timeline:

  boundaries   process start, each run's root span (open/close), each stage span, the first start and last
               end of each tool span kind per stage, the first git start and last git end, process exit;
  intervals    the time between consecutive boundaries, with the git and other processes that ran inside;
  processes    every program the run started (git, docker…): count and summed wall time.

Then one more sample under `python -X importtime` (imports only; importtime's own bookkeeping inflates them,
so they are shares, not absolute costs), one under cProfile (the pipeline's functions by cumulative time: plan
and input digests, version facts, manifest writes, tracing, pre-flights) and, for the start-up alone, medians
of separate processes:
`python -c pass`, `python -c 'import invoke.main'`, `invoke --list` on the clone.
Figures are medians over the samples; the run's facts (date, commit, load at start and end) come last.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.change_loop import CASES, INVOKE, Bench, StepFailed, make_clone, parse_args, start_run  # noqa: E402
from bench.run_facts import loadavg  # noqa: E402

PY = ROOT / ".venv/bin/python"


@dataclass
class Span:
    """One span of a run's trace: start and end in epoch seconds."""

    name: str
    start: float
    end: float
    id: str
    parent: str | None
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class Sample:
    """One measured `invoke build push`: wall time, timeline boundaries, processes (start, end, argv)."""

    wall: float
    boundaries: list[tuple[str, float]]
    procs: list[tuple[float, float, str]]


def spans_of(run_dirs: list[Path]) -> list[Span]:
    """Every span of the given runs' trace files."""
    out: list[Span] = []
    for d in run_dirs:
        f = d / "trace.otlp.jsonl"
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        attrs = {a["key"]: next(iter(a["value"].values())) for a in s.get("attributes", [])}
                        out.append(Span(s["name"], int(s["startTimeUnixNano"]) / 1e9,
                                        int(s["endTimeUnixNano"]) / 1e9, s["spanId"], s.get("parentSpanId"), attrs))
    return out


def processes(strace_out: Path) -> tuple[float, float, list[tuple[float, float, str]]]:
    """(process start, process exit, [(start, end, program and first args)]) from strace's -ttt output."""
    starts: dict[str, tuple[float, str]] = {}
    ends: dict[str, float] = {}
    first_pid, t0 = "", 0.0
    for line in strace_out.read_text().splitlines():
        m = re.match(r"(\d+) +(\d+\.\d+) (.*)", line)
        if not m:
            continue
        pid, t, rest = m.group(1), float(m.group(2)), m.group(3)
        if rest.startswith("execve(") and "= -1" not in rest:
            argv = re.findall(r'"([^"]*)"', rest.split("[", 1)[1] if "[" in rest else rest)
            if not first_pid:
                first_pid, t0 = pid, t
            starts[pid] = (t, " ".join(argv[:3]))
        elif rest.startswith("+++ exited") or rest.startswith("+++ killed"):
            ends[pid] = t          # the thread group's end (a Go program's exit_group comes from another thread)
    procs = [(t, ends.get(pid, t), what) for pid, (t, what) in starts.items() if pid != first_pid]
    return t0, ends.get(first_pid, t0), sorted(procs)


def program(what: str) -> str:
    """'git log -1' → 'git log'; '/usr/bin/docker build …' → 'docker build'."""
    parts = what.split()
    name = Path(parts[0]).name if parts else "?"
    return f"{name} {parts[1]}" if len(parts) > 1 and not parts[1].startswith("-") else name


def timeline(t0: float, t_exit: float, spans: list[Span],
             procs: list[tuple[float, float, str]]) -> list[tuple[str, float]]:
    """The sorted boundaries (label, epoch seconds) of one sample."""
    b: list[tuple[str, float]] = [("process start", t0), ("process exit", t_exit)]
    ids = {s.id for s in spans}
    tools: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in spans:
        if s.parent not in ids:
            b += [(f"run {s.name}: open", s.start), (f"run {s.name}: close", s.end)]
        elif s.name.startswith("stage "):
            b += [(f"{s.name}: start", s.start), (f"{s.name}: end", s.end)]
        elif s.name.startswith(("exec ", "engine ")):
            tools[s.name].append((s.start, s.end))
    for name, ivs in tools.items():
        b += [(f"{name}: first start", min(i[0] for i in ivs)), (f"{name}: last end", max(i[1] for i in ivs))]
    gits = [p for p in procs if program(p[2]).startswith("git")]
    if gits:
        b += [("first git start", gits[0][0]), ("last git end", max(p[1] for p in gits))]
    return sorted(b, key=lambda x: x[1])


def sample(bench: Bench, case: str, n: int, work: Path) -> Sample:
    """One `invoke build push` under strace; its timeline, processes and wall time."""
    rel = CASES[case][1]
    if rel:
        bench.change(rel, f"where {case} {n}")
    runs = bench.clone / ".pipeline/local/runs"
    before = set(runs.glob("*/")) if runs.is_dir() else set()
    out = work / f"{case}-{n}.strace"
    t = time.monotonic()
    subprocess.run(["strace", "--seccomp-bpf", "-f", "-ttt", "-q", "-e", "trace=execve", "-o", str(out),
                    str(INVOKE), "-r", str(bench.clone), "build", "push"], cwd=bench.clone, env=bench.env,
                   capture_output=True, timeout=900, check=True)
    wall = time.monotonic() - t
    t0, t_exit, procs = processes(out)
    spans = spans_of(sorted(set(runs.glob("*/")) - before))
    return Sample(wall, timeline(t0, t_exit, spans, procs), procs)


def plain_wall(bench: Bench, case: str, n: int) -> float:
    rel = CASES[case][1]
    if rel:
        bench.change(rel, f"plain {case} {n}")
    t = time.monotonic()
    bench.ours_one()
    return time.monotonic() - t


def print_case(case: str, samples: list[Sample], plain: list[float]) -> None:
    walls = [s.wall for s in samples]
    print(f"\n## {CASES[case][0]}: `invoke build push`\n")
    print(f"wall time under strace: median {statistics.median(walls):.3f} s ({min(walls):.3f}–{max(walls):.3f}); "
          f"without strace: median {statistics.median(plain):.3f} s ({min(plain):.3f}–{max(plain):.3f})\n")
    # intervals between consecutive boundaries, by label pair, medians over the samples
    rows: dict[tuple[int, str], list[float]] = defaultdict(list)
    inside: dict[tuple[int, str], list[str]] = defaultdict(list)
    for s in samples:
        bs, procs = s.boundaries, s.procs
        for i in range(1, len(bs)):
            key = (i, f"{bs[i - 1][0]} → {bs[i][0]}")
            rows[key].append((bs[i][1] - bs[i - 1][1]) * 1000)
            within: dict[str, list[float]] = defaultdict(list)
            for a, e, what in procs:
                if bs[i - 1][1] <= (a + e) / 2 < bs[i][1]:
                    within[program(what)].append((e - a) * 1000)
            if s is samples[0]:
                inside[key] = [f"{k} ×{len(v)} {sum(v):.0f} ms" for k, v in sorted(within.items())]
    print("| # | interval (first sample's order) | median ms (min–max) | processes inside (first sample) |")
    print("|---|---|---|---|")
    for (i, label), ms in sorted(rows.items()):
        if len(ms) == len(samples):
            print(f"| {i} | {label} | {statistics.median(ms):.0f} ({min(ms):.0f}–{max(ms):.0f}) | "
                  f"{'; '.join(inside[(i, label)]) or '–'} |")
    agg: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for s in samples:
        per: dict[str, list[float]] = defaultdict(list)
        for a, e, what in s.procs:
            per[program(what)].append((e - a) * 1000)
        for k, durations in per.items():
            agg[k].append((len(durations), sum(durations)))
    print("\n| program started | count per run | summed wall ms (median) |\n|---|---|---|")
    for k, v in sorted(agg.items(), key=lambda kv: -statistics.median(x[1] for x in kv[1])):
        print(f"| {k} | {statistics.median(x[0] for x in v):.0f} | {statistics.median(x[1] for x in v):.0f} |")


def importtime(bench: Bench, case: str) -> None:
    """One sample under `python -X importtime`: cumulative ms of the top-level imports, grouped."""
    rel = CASES[case][1]
    if rel:
        bench.change(rel, f"importtime {case}")
    cp = subprocess.run([str(PY), "-X", "importtime", str(INVOKE), "-r", str(bench.clone), "build", "push"],
                        cwd=bench.clone, env=bench.env, capture_output=True, text=True, timeout=900, check=True)
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in cp.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        self_us, name = int(m.group(1)), m.group(4)
        root = name.split(".")[0]
        groups[root if root in ("pipeline", "invoke", "opentelemetry", "rich", "google", "yaml", "tasks")
               else "standard library and others"] += self_us / 1000
        total += self_us / 1000
    print(f"\nimports under -X importtime ({CASES[case][0]}), self time summed by package: {total:.0f} ms in all")
    print("\n| package | ms |\n|---|---|")
    for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.0f} |")


def profiled(bench: Bench, case: str, work: Path, top: int = 30) -> None:
    """One sample under cProfile: the pipeline's own functions by cumulative time (main thread only: work
    that runs in worker threads shows as the wait of the function that started it)."""
    import pstats

    rel = CASES[case][1]
    if rel:
        bench.change(rel, f"cprofile {case}")
    out = work / f"{case}.prof"
    subprocess.run([str(PY), "-m", "cProfile", "-o", str(out), str(INVOKE), "-r", str(bench.clone), "build", "push"],
                   cwd=bench.clone, env=bench.env, capture_output=True, timeout=900, check=True)
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    rows = []
    for (fname, line, func), (_cc, ncalls, _tt, cum, _callers) in stats.items():
        rel_name = fname.split(str(bench.clone) + "/", 1)[-1]
        if fname.startswith(str(bench.clone)) and func != "<module>":
            rows.append((cum * 1000, ncalls, f"{rel_name}:{line} {func}"))
    print(f"\ncProfile ({CASES[case][0]}), the pipeline's functions by cumulative ms (profiler overhead included):")
    print("\n| cumulative ms | calls | function |\n|---|---|---|")
    for cum, ncalls, name in sorted(rows, reverse=True)[:top]:
        print(f"| {cum:.1f} | {ncalls} | `{name}` |")


def startup(bench: Bench, runs: int) -> None:
    def med(argv: list[str]) -> str:
        xs = []
        for _ in range(runs):
            t = time.monotonic()
            subprocess.run(argv, cwd=bench.clone, env=bench.env, capture_output=True, timeout=120, check=True)
            xs.append((time.monotonic() - t) * 1000)
        return f"{statistics.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"
    print(f"\nstart-up alone, separate processes, median of {runs} ms (min–max):\n")
    print("| process | ms |\n|---|---|")
    print(f"| `python -c pass` (interpreter, site) | {med([str(PY), '-c', 'pass'])} |")
    print(f"| `python -c 'import invoke.main'` | {med([str(PY), '-c', 'import invoke.main'])} |")
    print(f"| `invoke -r CLONE --list` (invoke, tasks.py and what it imports at load) | "
          f"{med([str(INVOKE), '-r', str(bench.clone), '--list'])} |")


def main() -> int:
    runs, cases = parse_args(__doc__ or "", "go,noop", "samples per case")
    facts, run_id, before = start_run()
    with tempfile.TemporaryDirectory(prefix="veza-where-") as tmp:
        bench = Bench(make_clone(Path(tmp), run_id), run_id)
        try:
            bench.ours_one()          # warm: every image of this commit built and pushed
            for case in cases:
                got = [sample(bench, case, n, Path(tmp)) for n in range(runs)]
                plain = [plain_wall(bench, case, n) for n in range(runs)]
                print_case(case, got, plain)
                importtime(bench, case)
                profiled(bench, case, Path(tmp))
            startup(bench, max(runs, 5))
        except (StepFailed, subprocess.CalledProcessError) as exc:
            print(f"where_time_goes: a run failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.cleanup(before)
    print(f"\nload at the end {loadavg()}")
    print(facts.finish())
    return 0


if __name__ == "__main__":
    sys.exit(main())
