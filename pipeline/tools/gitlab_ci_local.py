"""gitlab-ci-local adapter: run a repository's `.gitlab-ci.yml` on this machine as a GitLab runner would.

The tool is the npm package pinned in ci/gitlab-ci-local/package-lock.json (4.56.x: the newest that runs on
Node 20), installed by `python3 -m pipeline.machine.bootstrap --tests` into .tools/gitlab-ci-local. Every job runs
with the shell executor (`--shell-executor-no-image`: no job image, which could not be pulled here) in its own copy
of the tracked files (`--shell-isolation`); jobs share only their declared artifacts.

Variables: plain ones on argv (`--variable K=V`); secrets never on argv, but in the tool's home variables file
(`<home>/.gitlab-ci-local/variables.yml`, mode 0600, in a private directory removed afterwards), with GitLab's
variable types: `file` (the job gets a path to a file holding the value) or `variable`. The tool's process gets
none of our environment beyond PATH/HOME/locale (tools/proc BARE_ENV), so a job sees exactly what it is given.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ToolMissing
from pipeline.core.paths import TOOLS_BIN
from pipeline.tools import proc

EXE = TOOLS_BIN / "gitlab-ci-local"
FILE_VARIABLE_DIRS = Path("/tmp/gitlab-ci-local-file-variables-*")   # where 4.56 writes File variables
FIX = "run: python3 -m pipeline.machine.bootstrap --tests (it installs gitlab-ci-local from ci/gitlab-ci-local/)"


@dataclass(frozen=True)
class Secret:
    """A masked CI/CD variable: its value, and whether the job gets it as a file (GitLab's "File" type)."""
    value: str
    file: bool = False


def executable() -> Path:
    """The pinned gitlab-ci-local of the tools dir; ToolMissing (exit 6, with the fix) when it is not installed."""
    if not EXE.exists():
        raise ToolMissing(f"gitlab-ci-local is not installed ({EXE} missing)", FIX)
    return EXE


def variables_file(secrets: Mapping[str, Secret]) -> str:
    """The home variables file's text for these secrets (YAML; JSON is YAML): every one global, typed."""
    doc = {"global": {name: {"type": "file" if s.file else "variable", "values": {"*": s.value}}
                      for name, s in sorted(secrets.items())}}
    return json.dumps(doc, indent=1)


def argv(home: Path, file: Path, variables: Mapping[str, str], unset: Sequence[str] = (),
         jobs: Sequence[str] = ()) -> list[str]:
    """The command line (run it in `repo`: the tool takes only a relative --cwd): the private home, isolation
    flags, the pipeline file (relative to repo), plain variables, jobs (all if none)."""
    args = [str(EXE), "--cwd", ".", "--file", str(file), "--home", str(home), "--shell-executor-no-image",
            "--shell-isolation", "--color=false", "--timestamps"]
    for name, value in sorted(variables.items()):
        args += ["--variable", f"{name}={value}"]
    for name in unset:
        args += ["--unset-variable", name]
    return [*args, *jobs]


def run_pipeline(repo: Path, file: Path, *, variables: Mapping[str, str], secrets: Mapping[str, Secret],
                 unset: Sequence[str] = (), jobs: Sequence[str] = (), on_line: Callable[[str], None],
                 timeout: float, stop: threading.Event | None = None) -> int:
    """Run the pipeline `file` (relative to `repo`) defines (or only `jobs`); every output line to on_line (redacted);
    returns gitlab-ci-local's exit code (0: every job that ran passed). ToolMissing when it is not installed.

    The secrets' values are registered with the redactor, so no output line carries them.
    """
    from pipeline.core.redact import register_secret

    exe = executable()
    for s in secrets.values():
        register_secret(s.value)
    home = Path(tempfile.mkdtemp(prefix="veza-ci-local-"))
    before = set(FILE_VARIABLE_DIRS.parent.glob(FILE_VARIABLE_DIRS.name))
    try:
        state = home / ".gitlab-ci-local"
        state.mkdir(mode=0o700)
        vfile = state / "variables.yml"
        vfile.touch(mode=0o600)
        vfile.write_text(variables_file(secrets))
        args = [str(exe), *argv(home, file, variables, unset, jobs)[1:]]
        return proc.stream(args, timeout=timeout, on_line=on_line, cwd=repo, stop=stop, inherit_env=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        # The tool writes each job's File variables (a kubeconfig, a key) under /tmp and leaves them there.
        for leftover in set(FILE_VARIABLE_DIRS.parent.glob(FILE_VARIABLE_DIRS.name)) - before:
            shutil.rmtree(leftover, ignore_errors=True)
