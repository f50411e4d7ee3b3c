"""`invoke ci-local`: run this repository's `.gitlab-ci.yml` on this machine, job by job, as GitLab would.

Two pipelines, as GitLab starts them:
- `branch`: a push to the default branch (CI_COMMIT_BRANCH = CI_DEFAULT_BRANCH = the checked-out branch):
  lint → build → scan, smoke → push → deploy-dev.
- `tag`: a release tag vX.Y.Z at HEAD (CI_COMMIT_TAG; no CI_COMMIT_BRANCH): lint → build → scan, smoke →
  release-prod. Refused at once, before any job, when the signing key, its passphrase or the prod kubeconfig
  is not given (the same variables the job itself requires: ci/jobs/release-prod.sh).

What the jobs get is what a team sets in GitLab (README, "CI"), read here from our environment by name:
- the engine, as a docker:dind service gives it: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH;
- every VEZA_* variable (the registry's address, CA and credentials, passphrases, …) except the ones that
  describe this checkout (LOCAL_ONLY), which each job sets for its own copy;
- DEV_KUBECONFIG, PROD_KUBECONFIG, VEZA_PROD_SIGNING_KEY, and every VEZA_*_CA_FILE (a registry's CA, which
  pipeline.toml names as registry_ca_file = "$VEZA_DEV_REGISTRY_CA_FILE") as GitLab "File" variables: our value
  is a path (its content is given) or the content itself; the job's variable holds the path of its own copy.
Names that hold a secret (SECRET_SUFFIXES, and the file variables) go to gitlab-ci-local's variables file, never
argv, and are redacted from every line. Nothing else of our environment reaches a job (tools/gitlab_ci_local).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.paths import VENV_DIR
from pipeline.tools import gitlab_ci_local
from pipeline.tools.git import GitRepo
from pipeline.tools.gitlab_ci_local import Secret

PIPELINES = ("branch", "tag")
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
FILE_VARIABLES = ("DEV_KUBECONFIG", "PROD_KUBECONFIG", "VEZA_PROD_SIGNING_KEY")
FILE_SUFFIXES = ("_CA_FILE",)   # a registry's CA: a File variable too (not secret; given as one for its type)
# What the tag pipeline's release-prod job requires (ci/jobs/release-prod.sh's ci_require line).
TAG_REQUIRES = ("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG")
SECRET_SUFFIXES = ("PASSWORD", "PASSPHRASE", "TOKEN", "SECRET", "KEY", "KUBECONFIG")
# Variables of this checkout, not of the pipeline: a job's copy sets its own (paths.py reads them).
LOCAL_ONLY = ("VEZA_ROOT", "VEZA_CONFIG", "VEZA_STATE_DIR", "VEZA_TOOLS_DIR")
RELEASE_TAG = re.compile(r"^v\d+\.\d+\.\d+$")   # the template's release-prod rule
TIMEOUT_S = 3 * 3600.0


@dataclass
class CiRun:
    """What one pipeline run was given (names only for secrets) and how it ended."""
    pipeline: str
    ref: str
    variables: dict[str, str] = field(default_factory=dict)
    secret_names: list[str] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0


def pipeline_variables(pipeline: str, repo: GitRepo) -> tuple[dict[str, str], list[str], str]:
    """GitLab's predefined variables of this pipeline kind for the repository's HEAD: (variables, names to unset,
    the ref). UsageError (exit 2, one line) for an unknown kind, a detached HEAD (branch) or no vX.Y.Z tag at HEAD."""
    if pipeline not in PIPELINES:
        raise UsageError(f"--pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}",
                         "use --pipeline branch (the default branch's pipeline) or --pipeline tag")
    if pipeline == "branch":
        branch = repo.branch()
        if not branch:
            raise UsageError(f"HEAD of {repo.root} is detached: a branch pipeline needs a branch",
                             "git switch <branch>, or run --pipeline tag on a release tag")
        return ({"CI_COMMIT_BRANCH": branch, "CI_DEFAULT_BRANCH": branch, "CI_COMMIT_REF_NAME": branch},
                ["CI_COMMIT_TAG"], branch)
    head = repo.head_sha()
    tags = sorted(t.name for t in repo.tags() if t.sha == head and RELEASE_TAG.match(t.name))
    if not tags:
        raise UsageError(f"no release tag vX.Y.Z points at HEAD ({head[:12]}) of {repo.root}",
                         "tag it first (invoke bump, or git tag -a vX.Y.Z), then rerun --pipeline tag")
    tag = tags[-1]
    return {"CI_COMMIT_TAG": tag, "CI_COMMIT_REF_NAME": tag}, ["CI_COMMIT_BRANCH"], tag


def shell_runner_file(repo: Path) -> Path:
    """The repository's .gitlab-ci.yml as a shell runner runs it: the same jobs, without `default.image` (this
    machine pulls no job image; gitlab-ci-local's shell executor takes only jobs without one). Written under
    `.gitlab-ci-local/` (the tool's own state directory, never a job's copy); returns its path relative to repo.
    UsageError when the template is missing or a job names its own image."""
    import yaml

    src = repo / ".gitlab-ci.yml"
    try:
        doc = yaml.safe_load(src.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {src}: {exc}", "run ci-local in the project's clone") from None
    own = sorted(k for k, v in doc.items() if isinstance(v, dict) and "image" in v and k != "default")
    if own:
        raise UsageError(f"{src}: job(s) {', '.join(own)} name their own image; a shell runner cannot run them",
                         "give the image in `default:` only (ci-local drops it)")
    doc.get("default", {}).pop("image", None)
    rel = Path(".gitlab-ci-local") / "shell-runner.gitlab-ci.yml"
    (repo / rel).parent.mkdir(exist_ok=True)
    (repo / rel).write_text(yaml.safe_dump(doc, sort_keys=False))
    return rel


def is_file_variable(name: str) -> bool:
    """GitLab "File" type: the job gets a path to its own copy of the content (FILE_VARIABLES, FILE_SUFFIXES)."""
    return name in FILE_VARIABLES or (name.startswith("VEZA_") and name.endswith(FILE_SUFFIXES))


def is_secret(name: str) -> bool:
    return is_file_variable(name) or name.endswith(SECRET_SUFFIXES)


def _file_content(value: str) -> str:
    """A file variable's content: the file's, when our value names an existing file; else the value itself."""
    path = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and path.is_file():
        return path.read_text()
    return value


def ci_variables(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Secret]]:
    """The CI/CD variables our environment gives the jobs: (plain variables, secrets). See the module docstring."""
    plain: dict[str, str] = {}
    secrets: dict[str, Secret] = {}
    for name, value in environ.items():
        if not value or name in LOCAL_ONLY:
            continue
        if name not in ENGINE_VARIABLES and not is_file_variable(name) and not name.startswith("VEZA_"):
            continue
        if name in ENGINE_VARIABLES and not environ.get("DOCKER_HOST"):
            continue   # TLS settings without the engine they are for would only break the default socket
        if is_file_variable(name):
            secrets[name] = Secret(_file_content(value), file=True)
        elif is_secret(name):
            secrets[name] = Secret(value)
        else:
            plain[name] = value
    return plain, secrets


def missing_for(pipeline: str, plain: Mapping[str, str], secrets: Mapping[str, Secret]) -> list[str]:
    """The variables a pipeline kind requires and is not given (tag: TAG_REQUIRES), in their order."""
    if pipeline != "tag":
        return []
    return [n for n in TAG_REQUIRES if n not in secrets and n not in plain]


def run_ci_local(pipeline: str = "branch", *, repo_dir: Path | None = None, environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] = print, timeout: float = TIMEOUT_S) -> CiRun:
    """Run the repository's .gitlab-ci.yml pipeline of this kind with the pinned gitlab-ci-local; every line of
    its output to `say`. Returns the CiRun; StageFailed (exit 1) naming the log when a job failed, UsageError
    (exit 2) before any job for a bad kind/ref or a tag pipeline without its variables, ToolMissing (exit 6)
    when gitlab-ci-local is not installed."""
    environ = os.environ if environ is None else environ
    repo = GitRepo(repo_dir or Path.cwd())
    predefined, unset, ref = pipeline_variables(pipeline, repo)
    plain, secrets = ci_variables(environ)
    missing = missing_for(pipeline, plain, secrets)
    if missing:
        raise UsageError(f"the tag pipeline's release-prod job needs the CI variable(s) {', '.join(missing)}; "
                         "none is set",
                         "set them (VEZA_PROD_SIGNING_KEY: prod's cosign.key, its path or content; "
                         "VEZA_PROD_SIGNING_PASSPHRASE: its passphrase; PROD_KUBECONFIG: the prod cluster's "
                         "kubeconfig) as in the README, \"CI\"")
    gitlab_ci_local.executable()
    uv = VENV_DIR / "bin" / "uv"
    if uv.exists() and "VEZA_UV" not in plain:
        plain["VEZA_UV"] = str(uv)   # each job's bootstrap installs its venv with uv: seconds, not minutes
    variables = {**plain, **predefined}
    run = CiRun(pipeline, ref, variables, sorted(secrets))
    say(f"ci-local: the {pipeline} pipeline of {repo.root} at {ref} ({repo.head_sha()[:12]}); variables: "
        f"{', '.join(sorted(variables)) or 'none'}; secrets (values not shown): "
        f"{', '.join(run.secret_names) or 'none'}")
    t0 = time.monotonic()
    run.exit_code = gitlab_ci_local.run_pipeline(repo.root, shell_runner_file(repo.root), variables=variables,
                                                 secrets=secrets, unset=unset, on_line=say, timeout=timeout)
    run.seconds = time.monotonic() - t0
    if run.exit_code != 0:
        raise StageFailed(f"ci-local: the {pipeline} pipeline failed (gitlab-ci-local exit {run.exit_code}) after "
                          f"{run.seconds:.0f}s; the failing job's lines are above",
                          f"job logs: {repo.root / '.gitlab-ci-local' / 'output'}")
    say(f"ci-local: the {pipeline} pipeline passed in {run.seconds:.0f}s")
    return run

