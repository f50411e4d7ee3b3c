"""The CI definitions are valid for their platforms (published schemas, vendored by check-jsonschema)
and call only invoke targets that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(sys.executable).parent / "check-jsonschema"
FILES = [(".github/workflows/release.yml", "vendor.github-workflows"), (".gitlab-ci.yml", "vendor.gitlab-ci")]


def _validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize(("rel", "schema"), FILES)
def test_ci_file_valid_against_published_schema(rel: str, schema: str) -> None:
    cp = _validate(ROOT / rel, schema)
    assert cp.returncode == 0, cp.stdout + cp.stderr


@pytest.mark.parametrize(("rel", "schema"), FILES)
def test_schema_check_rejects_a_broken_twin(rel: str, schema: str, tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / rel).read_text())
    if "jobs" in data:
        data["jobs"]["lint"]["runs-on"] = {"bogus": True}
        data["jobs"]["lint"]["steps"] = "not a list"
    else:
        data["lint"]["stage"] = ["not", "a", "string"]
        data["lint"]["script"] = {"bogus": 1}
    broken = tmp_path / Path(rel).name
    broken.write_text(yaml.safe_dump(data))
    assert _validate(broken, schema).returncode != 0


def _github_steps() -> dict[str, list[dict[str, object]]]:
    return {name: job["steps"] for name, job in
            yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())["jobs"].items()}


def _gitlab_jobs() -> dict[str, dict[str, object]]:
    data = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    return {k: v for k, v in data.items() if isinstance(v, dict) and "script" in v}


def _script(job: str) -> str:
    return (ROOT / "ci" / "jobs" / f"{job}.sh").read_text()


def test_both_templates_run_exactly_the_job_scripts() -> None:
    """Every GitLab job is one line, its own ci/jobs/<job>.sh; every GitHub `run:` step is one of those
    scripts and nothing else; both templates run every script of ci/jobs/, so the two cannot drift."""
    scripts = {p.stem for p in (ROOT / "ci" / "jobs").glob("*.sh")}
    gitlab = _gitlab_jobs()
    assert {name: job["script"] for name, job in gitlab.items()} == {n: [f"ci/jobs/{n}.sh"] for n in gitlab}
    github: list[str] = []
    for steps in _github_steps().values():
        for step in steps:
            if "run" in step:
                m = re.fullmatch(r"ci/jobs/([a-z-]+)\.sh", str(step["run"]).strip())
                assert m, f"a GitHub step runs more than a job script: {step['run']!r}"
                github.append(m.group(1))
            else:
                assert "uses" in step, step
    assert set(gitlab) == set(github) == scripts, (set(gitlab), set(github), scripts)
    assert len(github) == len(set(github)), github


def test_no_gitlab_job_downloads_two_diverging_copies_of_the_manifest() -> None:
    """GitLab hands a job the artifacts of its `needs` (without `needs`: of every job of the earlier stages), a
    later download overwriting a file of the same path. Of the jobs a job downloads an environment's manifest
    from, the one of the latest stage must have been handed (transitively) every other's copy, so no record is
    lost: scan and smoke side by side, both needed by push, lost one of their records."""
    data = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    jobs = _gitlab_jobs()
    stages: list[str] = data["stages"]
    default_paths = data["default"]["artifacts"]["paths"]

    def manifests(job: str) -> set[str]:
        art = jobs[job].get("artifacts") or {"paths": default_paths}
        return {p for p in art["paths"] if p.endswith("manifest.json")}   # type: ignore[index]

    def sources(job: str) -> list[str]:
        if "needs" in jobs[job]:
            return list(jobs[job]["needs"])   # type: ignore[call-overload]
        before = stages.index(str(jobs[job]["stage"]))
        return [j for j in jobs if stages.index(str(jobs[j]["stage"])) < before]

    def handed(job: str) -> set[str]:   # every job whose artifacts reached `job`, transitively
        out: set[str] = set()
        for src in sources(job):
            out |= {src, *handed(src)}
        return out

    checked = 0
    for job in jobs:
        for path in {p for src in sources(job) for p in manifests(src)}:
            uploaders = [src for src in sources(job) if path in manifests(src)]
            last = max(uploaders, key=lambda j: stages.index(str(jobs[j]["stage"])))
            same_stage = [j for j in uploaders if jobs[j]["stage"] == jobs[last]["stage"]]
            assert same_stage == [last] and set(uploaders) - {last} <= handed(last), \
                f"{job} downloads {path} from {uploaders}: the last one downloaded wins, dropping the others' records"
            checked += 1
    assert checked >= 5


def test_ci_calls_only_existing_invoke_targets() -> None:
    listed = subprocess.run([str(Path(sys.executable).parent / "invoke"), "--list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    tasks = {ln.split()[0] for ln in listed.splitlines()[1:] if ln.strip()}
    used = set()
    for sh in (ROOT / "ci").rglob("*.sh"):
        used |= set(re.findall(r'"\$INVOKE" ([a-z][a-z-]+)', sh.read_text()))
    assert used and used <= tasks, used - tasks
    assert {"lint", "build", "scan", "smoke", "push", "release"} <= used


def test_ci_job_scripts_parse_and_are_executable() -> None:
    for sh in sorted((ROOT / "ci").rglob("*.sh")):
        cp = subprocess.run(["bash", "-n", str(sh)], capture_output=True, text=True, timeout=30, check=False)
        assert cp.returncode == 0, (sh, cp.stderr)
        if sh.parent.name == "jobs":
            assert sh.stat().st_mode & 0o111, f"{sh} is not executable"


@pytest.mark.parametrize(("job", "env", "secret"), [("deploy-dev", "dev", "DEV_KUBECONFIG"),
                                                    ("release-prod", "prod", "PROD_KUBECONFIG")])
def test_ci_deploys_reach_an_external_cluster_through_the_variable_pipeline_toml_names(
        job: str, env: str, secret: str) -> None:
    """The job script requires the kubeconfig secret, writes it into the file whose path pipeline.toml's
    kubeconfig_env names, before any release step; GitHub hands that step the secret of that name."""
    from pipeline.core.config import load_config

    var = load_config(ROOT / "pipeline.toml", check_files=False).env(env).kubeconfig_env
    assert var
    lines = _script(job).splitlines()
    at = {what: next(i for i, ln in enumerate(lines) if ln.startswith(what)) for what in
          ("ci_require", f"ci_kubeconfig {secret} {var}", f'"$INVOKE" release --env {env}')}
    assert secret in lines[at["ci_require"]].split()
    assert at["ci_require"] < at[f"ci_kubeconfig {secret} {var}"] < at[f'"$INVOKE" release --env {env}']
    step = next(s for s in _github_steps()[job] if s.get("run") == f"ci/jobs/{job}.sh")
    assert step["env"][secret] == f"${{{{ secrets.{secret} }}}}"  # type: ignore[index]



# The job scripts that reach an environment's registry, and that environment (release-prod also reads the
# registries of prod's reuse_from sources: lookups, signatures, the copy's reads).
REGISTRY_JOBS = {"build": "dev", "scan": "dev", "smoke": "dev", "push": "dev", "deploy-dev": "dev",
                 "release-prod": "prod"}


def test_every_github_step_that_reaches_a_registry_gets_the_variables_pipeline_toml_names() -> None:
    """Each GitHub step running a job of REGISTRY_JOBS is handed, from secrets, the push credential variables its
    environment's registry_access names (and those of prod's reuse_from sources for release-prod), and the pull
    ones when named: without them the reuse lookup of `build` silently builds everything, and a registry with
    a login refuses the rest."""
    from pipeline.core.config import load_config

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    steps = {str(s["run"]).strip(): s for job in _github_steps().values() for s in job if "run" in s}
    checked = 0
    for job, env_name in REGISTRY_JOBS.items():
        env = cfg.env(env_name)
        envs = [env, *(cfg.env(n) for n in env.reuse_from)] if job == "release-prod" else [env]
        wanted = {v for e in envs for v in (e.registry_access.username_env, e.registry_access.password_env) if v}
        # a CA named through a variable (registry_ca_file = "$VAR", unset here so it stays in the path)
        wanted |= {m for e in envs for m in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", str(e.registry_ca_file or ""))}
        if job in ("deploy-dev", "release-prod"):
            wanted |= {v for v in (env.pull_username_env, env.pull_password_env) if v}
        given = steps[f"ci/jobs/{job}.sh"].get("env") or {}
        assert isinstance(given, dict)
        missing = sorted(wanted - set(given))
        assert not missing, f"the GitHub step of {job} lacks {missing}"
        assert all(given[v] == f"${{{{ secrets.{v} }}}}" for v in wanted), given
        checked += len(wanted)
    assert checked >= 2 * len(REGISTRY_JOBS)

def _run_job(job: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a copy of ci/ (so a script that went on could only bootstrap an empty directory) with only `env`."""
    shutil.copytree(ROOT / "ci", tmp_path / "ci", dirs_exist_ok=True)
    return subprocess.run(["bash", str(tmp_path / "ci" / "jobs" / f"{job}.sh")], capture_output=True, text=True,
                          timeout=30, check=False, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **env})


def test_release_prod_without_its_variables_stops_at_once_naming_them(tmp_path: Path) -> None:
    """A tag pipeline without the signing key, its passphrase or the kubeconfig stops before any setup, with
    one line naming each missing variable, exit 2; the passphrase variable is the one pipeline.toml names."""
    from pipeline.core.config import load_config
    from pipeline.trust.envkeys import passphrase_var

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    assert "VEZA_PROD_SIGNING_PASSPHRASE" == passphrase_var(cfg, cfg.env("prod"))
    cp = _run_job("release-prod", tmp_path)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert cp.stdout == "" and len(cp.stderr.splitlines()) == 1, cp.stderr
    for var in ("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG",
                "VEZA_DEV_SIGNING_PUBLIC_KEY"):
        assert var in cp.stderr
    cp = _run_job("release-prod", tmp_path, VEZA_PROD_SIGNING_KEY="k", VEZA_PROD_SIGNING_PASSPHRASE="p",
                  VEZA_DEV_SIGNING_PUBLIC_KEY="pub")
    assert cp.returncode == 2 and "PROD_KUBECONFIG" in cp.stderr and "SIGNING" not in cp.stderr, cp.stderr
    assert not list(tmp_path.glob("veza-ci.*")), "the job's private directory outlived it"


def test_release_prod_without_devs_public_key_stops_naming_it_alone(tmp_path: Path) -> None:
    """Given prod's own three, release-prod still stops before any setup without dev's public key: without it
    prod's build could trust no image of dev's registry (reuse_from) and would rebuild every service."""
    cp = _run_job("release-prod", tmp_path, VEZA_PROD_SIGNING_KEY="k", VEZA_PROD_SIGNING_PASSPHRASE="p",
                  PROD_KUBECONFIG="kc")
    assert cp.returncode == 2 and cp.stdout == "", cp.stdout + cp.stderr
    assert cp.stderr.splitlines() == ["error: release-prod: set the CI variable(s) VEZA_DEV_SIGNING_PUBLIC_KEY "
                                      "(masked; see README, \"CI\")"], cp.stderr


def test_deploy_dev_without_devs_kept_key_stops_at_once_naming_the_variables(tmp_path: Path) -> None:
    """deploy-dev signs with dev's kept key, never one made on the runner (auto_key would make a new one on every
    fresh runner, which prod could not trust): without the key or its passphrase it stops before any setup, one
    line naming each missing one, exit 2; the passphrase variable is the one pipeline.toml names for dev."""
    from pipeline.core.config import load_config
    from pipeline.trust.envkeys import passphrase_var

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    assert passphrase_var(cfg, cfg.env("dev")) == "VEZA_DEV_SIGNING_PASSPHRASE"
    cp = _run_job("deploy-dev", tmp_path, DEV_KUBECONFIG="kc")
    assert cp.returncode == 2 and cp.stdout == "", cp.stdout + cp.stderr
    assert cp.stderr.splitlines() == ["error: deploy-dev: set the CI variable(s) VEZA_DEV_SIGNING_KEY "
                                      "VEZA_DEV_SIGNING_PASSPHRASE (masked; see README, \"CI\")"], cp.stderr
    cp = _run_job("deploy-dev", tmp_path, DEV_KUBECONFIG="kc", VEZA_DEV_SIGNING_KEY="k")
    assert cp.returncode == 2 and "variable(s) VEZA_DEV_SIGNING_PASSPHRASE (masked" in cp.stderr, cp.stderr
    assert not list(tmp_path.glob("veza-ci.*")), "the job's private directory outlived it"
    step = next(s for s in _github_steps()["deploy-dev"] if s.get("run") == "ci/jobs/deploy-dev.sh")
    for var in ("VEZA_DEV_SIGNING_KEY", "VEZA_DEV_SIGNING_PASSPHRASE"):
        assert step["env"][var] == f"${{{{ secrets.{var} }}}}"  # type: ignore[index]
    step = next(s for s in _github_steps()["release-prod"] if s.get("run") == "ci/jobs/release-prod.sh")
    assert step["env"]["VEZA_DEV_SIGNING_PUBLIC_KEY"] == "${{ vars.VEZA_DEV_SIGNING_PUBLIC_KEY }}"  # type: ignore


@pytest.mark.parametrize("as_file", [False, True], ids=["content", "file-variable"])
def test_devs_public_key_from_ci_is_the_one_prods_reuse_trusts_for_dev(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      as_file: bool) -> None:
    """release-prod's dev public key (content or File variable) lands where the plan's reuse lookup reads dev's
    trusted keys (registry_reuse.reuse_sources → envkeys.trusted_keys of dev), beside prod's own key, and only
    there: prod's own trusted keys stay prod's."""
    from pipeline.core.config import load_config
    from pipeline.stages.registry_reuse import reuse_sources
    from pipeline.trust import envkeys
    from pipeline.trust.keys import KeyPaths, generate_key_pair, load_public_key

    dev = generate_key_pair(KeyPaths(tmp_path / "dev"), "d3v")
    prod = generate_key_pair(KeyPaths(tmp_path / "prod"), "pr0d")
    value = str(dev.public) if as_file else dev.public.read_text()
    cp = subprocess.run(["bash", "-c", 'source ci/lib.sh; trap - EXIT; ci_signing_key prod VEZA_PROD_SIGNING_KEY; '
                         'ci_public_key dev VEZA_DEV_SIGNING_PUBLIC_KEY; echo "$VEZA_KEY_DIR"'], cwd=ROOT,
                        capture_output=True, text=True, timeout=30, check=False,
                        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "VEZA_DEV_SIGNING_PUBLIC_KEY": value,
                             "VEZA_PROD_SIGNING_KEY": prod.private.read_text()})
    assert cp.returncode == 0, cp.stderr
    key_dir = Path(cp.stdout.strip())
    assert sorted(p.relative_to(key_dir).as_posix() for p in key_dir.rglob("*") if p.is_file()) == \
        ["dev/cosign.pub", "prod/cosign.key"]
    monkeypatch.setenv("VEZA_KEY_DIR", str(key_dir))
    monkeypatch.setenv("VEZA_PROD_SIGNING_PASSPHRASE", "pr0d")
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    envkeys.signing_key(cfg, cfg.env("prod"))   # writes prod's public half, as the sign pre-flight does
    numbers = load_public_key(dev.public).public_numbers()
    by_env = {s.env.name: s for s in reuse_sources(cfg, cfg.env("prod"))}
    assert [k.public_numbers() for k in by_env["dev"].trusted or ()] == [numbers] and not by_env["dev"].unusable
    assert by_env["prod"].trusted is None   # its own repository: its own pushes
    assert "staging's images cannot be checked here" in by_env["staging"].unusable   # no staging key given
    assert [k.public_numbers() for k in envkeys.trusted_keys(cfg, cfg.env("prod"))] == \
        [load_public_key(prod.public).public_numbers()]


def _pasted(pem: str) -> str:
    """PEM text as a secret pasted from another tool may hold it: a leading blank line, indented lines, CRLF ends."""
    return "\r\n  " + "\r\n".join("  " + line for line in pem.splitlines()) + "\r\n"


@pytest.mark.parametrize("form", ["content", "pasted-content", "file-variable"])
def test_ci_signing_key_is_where_the_sign_stage_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         form: str) -> None:
    """The key a CI variable holds (its content, or a GitLab File variable's path) decrypts through the
    pipeline's own lookup (VEZA_KEY_DIR/prod/cosign.key), and verify-images then trusts its public half."""
    from pipeline.core.config import load_config
    from pipeline.trust import envkeys
    from pipeline.trust.keys import KeyPaths, generate_key_pair, public_pem

    made = generate_key_pair(KeyPaths(tmp_path / "made"), "s3cret")
    value = {"content": made.private.read_text(), "file-variable": str(made.private),
             "pasted-content": _pasted(made.private.read_text())}[form]
    cp = subprocess.run(["bash", "-c", 'source ci/lib.sh; trap - EXIT; ci_signing_key prod VEZA_PROD_SIGNING_KEY; '
                         'echo "$VEZA_KEY_DIR"'], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
                        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "VEZA_PROD_SIGNING_KEY": value})
    assert cp.returncode == 0, cp.stderr
    key_dir = Path(cp.stdout.strip())
    assert not (key_dir / "prod" / "cosign.pub").exists()
    monkeypatch.setenv("VEZA_KEY_DIR", str(key_dir))
    monkeypatch.setenv("VEZA_PROD_SIGNING_PASSPHRASE", "s3cret")
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    key = envkeys.signing_key(cfg, cfg.env("prod"))
    assert public_pem(key) == made.public.read_bytes()
    assert [k.public_numbers() for k in envkeys.trusted_keys(cfg, cfg.env("prod"))] == \
        [key.public_key().public_numbers()]


@pytest.mark.parametrize("form", ["content", "pasted-content", "file-variable"])
def test_a_registry_ca_ci_variable_is_a_file_pipeline_toml_reads_whether_it_holds_the_pem_or_a_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """GitHub secrets hold content, GitLab File variables a path: ci/lib.sh leaves every *_CA_FILE variable a path
    to the same PEM, which an environment's registry_ca_file = "$VAR" then resolves to and ssl loads."""
    import ssl

    from pipeline.core.config import load_config
    from tests.integration.tls_registry_fixtures import Pki

    ca = Pki.make(tmp_path / "ca").ca_file
    as_file = form == "file-variable"
    value = {"content": ca.read_text(), "file-variable": str(ca), "pasted-content": _pasted(ca.read_text())}[form]
    cp = subprocess.run(["bash", "-c", 'source ci/lib.sh; trap - EXIT; printf %s "$VEZA_DEV_REGISTRY_CA_FILE"'],
                        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
                        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "VEZA_DEV_REGISTRY_CA_FILE": value})
    assert cp.returncode == 0, cp.stderr
    path = Path(cp.stdout)
    assert path == ca if as_file else (path.parent.name == "ca" and oct(path.stat().st_mode & 0o777) == "0o600")
    assert path.read_text().split() == ca.read_text().split()
    head, table, rest = (ROOT / "pipeline.toml").read_text().partition("[environments.dev]\n")
    body, nxt, tail = rest.partition("\n[")
    body = "\n".join(ln for ln in body.splitlines() if ln.split("=")[0].strip() != "registry_ca_file")
    toml = tmp_path / "pipeline.toml"
    toml.write_text(f'{head}{table}registry_ca_file = "$VEZA_DEV_REGISTRY_CA_FILE"\n{body}{nxt}{tail}')
    monkeypatch.setenv("VEZA_DEV_REGISTRY_CA_FILE", str(path))
    got = load_config(toml, check_files=False).env("dev").registry_ca_file
    assert got == path
    ssl.create_default_context(cafile=str(got))


def test_missing_signing_key_names_the_variables_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sign stage's pre-flight on prod with no key: one line naming VEZA_KEY_DIR and the passphrase variable."""
    from pipeline.core.config import load_config
    from pipeline.core.errors import UsageError
    from pipeline.trust import envkeys

    monkeypatch.setenv("VEZA_KEY_DIR", str(tmp_path / "keys"))
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    with pytest.raises(UsageError) as err:
        envkeys.signing_key(cfg, cfg.env("prod"))
    line = err.value.one_line()   # what tasks.py prints
    assert "\n" not in line and err.value.exit_code == 2
    assert "VEZA_KEY_DIR" in line and "prod/cosign.key" in line and "VEZA_PROD_SIGNING_PASSPHRASE" in line, line
