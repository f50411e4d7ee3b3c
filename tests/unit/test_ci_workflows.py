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
    for var in ("VEZA_PROD_SIGNING_KEY", "VEZA_PROD_SIGNING_PASSPHRASE", "PROD_KUBECONFIG"):
        assert var in cp.stderr
    cp = _run_job("release-prod", tmp_path, VEZA_PROD_SIGNING_KEY="k", VEZA_PROD_SIGNING_PASSPHRASE="p")
    assert cp.returncode == 2 and "PROD_KUBECONFIG" in cp.stderr and "SIGNING" not in cp.stderr, cp.stderr
    assert not list(tmp_path.glob("veza-ci.*")), "the job's private directory outlived it"


@pytest.mark.parametrize("as_file", [False, True], ids=["content", "file-variable"])
def test_ci_signing_key_is_where_the_sign_stage_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         as_file: bool) -> None:
    """The key a CI variable holds (its content, or a GitLab File variable's path) decrypts through the
    pipeline's own lookup (VEZA_KEY_DIR/prod/cosign.key), and verify-images then trusts its public half."""
    from pipeline.core.config import load_config
    from pipeline.trust import envkeys
    from pipeline.trust.keys import KeyPaths, generate_key_pair, public_pem

    made = generate_key_pair(KeyPaths(tmp_path / "made"), "s3cret")
    value = str(made.private) if as_file else made.private.read_text()
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
