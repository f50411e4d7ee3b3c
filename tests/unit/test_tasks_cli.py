"""Every invoke task has help text, and so does every one of its flags; tasks.py imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from invoke.collection import Collection

import tasks

ROOT = Path(__file__).resolve().parents[2]


def test_every_task_and_flag_has_help() -> None:
    coll = Collection.from_module(tasks)
    assert len(coll.tasks) >= 29
    for name, t in coll.tasks.items():
        assert (t.__doc__ or "").strip(), f"task {name} has no help text"
        for arg in t.get_arguments():
            assert arg.help, f"invoke --help {name}: flag --{arg.name} has no help"


def test_task_module_import_stays_light() -> None:
    """`invoke --list` must stay fast: loading tasks.py imports none of the heavy modules."""
    code = ("import sys, tasks; heavy = [m for m in ('docker', 'git', 'rich', 'jsonschema', 'pipeline.stages.build') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout.strip()
    assert out == ""


def test_help_of_a_task_lists_its_flags() -> None:
    out = subprocess.run([sys.executable, "-m", "invoke", "--help", "release"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for flag in ("--env", "--service", "--dry-run", "--yes", "--fresh"):
        assert flag in out
