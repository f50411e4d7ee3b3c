"""`invoke ci-local` without running a job: which variables the jobs get and how (argv or the variables file),
GitLab's predefined variables per pipeline kind, the shell runner's copy of the template, the refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import UsageError
from pipeline.machine import ci_local
from pipeline.tools import gitlab_ci_local
from pipeline.tools.git import GitRepo
from pipeline.tools.gitlab_ci_local import Secret

ROOT = Path(__file__).resolve().parents[2]


def _repo(tmp_path: Path, branch: str = "main") -> Path:
    repo = tmp_path / "r"
    repo.mkdir()
    for args in (["init", "-q", "-b", branch], ["config", "user.email", "t@example.invalid"],
                 ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, timeout=30)
    (repo / ".gitlab-ci.yml").write_text((ROOT / ".gitlab-ci.yml").read_text())
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, timeout=30)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, timeout=30)
    return repo


def test_jobs_get_the_engine_veza_and_file_variables_and_secrets_only_through_the_file(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\n")
    environ = {"DOCKER_HOST": "tcp://127.0.0.3:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c",
               "VEZA_REGISTRY_PASSWORD": "s3cr3t-pw", "VEZA_REGISTRY_USERNAME": "ci", "DEV_KUBECONFIG": str(kc),
               "VEZA_PROD_SIGNING_KEY": "-----BEGIN KEY-----\nabc\n", "VEZA_PROD_SIGNING_PASSPHRASE": "pp",
               "VEZA_ROOT": "/work/tree", "VEZA_CONFIG": "/work/tree/pipeline.toml", "AWS_SECRET": "x",
               "HOME": "/root", "VEZA_PORT_FORWARD_PORTS": "1-2", "VEZA_EMPTY": ""}
    plain, secrets = ci_local.ci_variables(environ)
    assert plain == {"DOCKER_HOST": "tcp://127.0.0.3:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c",
                     "VEZA_REGISTRY_USERNAME": "ci", "VEZA_PORT_FORWARD_PORTS": "1-2"}
    assert secrets == {"VEZA_REGISTRY_PASSWORD": Secret("s3cr3t-pw"), "VEZA_PROD_SIGNING_PASSPHRASE": Secret("pp"),
                       "DEV_KUBECONFIG": Secret("apiVersion: v1\nkind: Config\n", file=True),
                       "VEZA_PROD_SIGNING_KEY": Secret("-----BEGIN KEY-----\nabc\n", file=True)}
    args = gitlab_ci_local.argv(tmp_path, Path("f.yml"), plain, ["CI_COMMIT_TAG"])
    joined = " ".join(args)
    assert "s3cr3t-pw" not in joined and "pp" not in args and "BEGIN KEY" not in joined
    assert "--shell-isolation" in args and "--shell-executor-no-image" in args
    assert "--variable" in args and "DOCKER_HOST=tcp://127.0.0.3:2376" in args
    no_host = {k: v for k, v in environ.items() if k != "DOCKER_HOST"}
    assert not {"DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"} & set(ci_local.ci_variables(no_host)[0])
    doc = yaml.safe_load(gitlab_ci_local.variables_file(secrets))
    assert doc["global"]["DEV_KUBECONFIG"] == {"type": "file", "values": {"*": "apiVersion: v1\nkind: Config\n"}}
    assert doc["global"]["VEZA_REGISTRY_PASSWORD"] == {"type": "variable", "values": {"*": "s3cr3t-pw"}}


def test_a_registry_ca_is_a_file_variable_whose_content_the_job_gets(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    plain, secrets = ci_local.ci_variables({"VEZA_DEV_REGISTRY_CA_FILE": str(ca), "VEZA_DEV_PUSH_USER": "ci",
                                            "OTHER_CA_FILE": str(ca)})
    assert plain == {"VEZA_DEV_PUSH_USER": "ci"}   # a name outside VEZA_* stays out, CA or not
    assert secrets == {"VEZA_DEV_REGISTRY_CA_FILE": Secret(ca.read_text(), file=True)}
    doc = yaml.safe_load(gitlab_ci_local.variables_file(secrets))
    assert doc["global"]["VEZA_DEV_REGISTRY_CA_FILE"]["type"] == "file"


def test_branch_and_tag_pipelines_get_gitlabs_predefined_variables(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "trunk")
    variables, unset, ref = ci_local.pipeline_variables("branch", GitRepo(repo))
    assert (variables, unset, ref) == ({"CI_COMMIT_BRANCH": "trunk", "CI_DEFAULT_BRANCH": "trunk",
                                        "CI_COMMIT_REF_NAME": "trunk"}, ["CI_COMMIT_TAG"], "trunk")
    with pytest.raises(UsageError, match="no release tag vX.Y.Z points at HEAD"):
        ci_local.pipeline_variables("tag", GitRepo(repo))
    subprocess.run(["git", "-C", str(repo), "tag", "-a", "v1.2.3", "-m", "r"], check=True, timeout=30)
    subprocess.run(["git", "-C", str(repo), "tag", "v1.2.3-rc1"], check=True, timeout=30)   # not the rule's form
    variables, unset, ref = ci_local.pipeline_variables("tag", GitRepo(repo))
    assert (variables, unset, ref) == ({"CI_COMMIT_TAG": "v1.2.3", "CI_COMMIT_REF_NAME": "v1.2.3"},
                                       ["CI_COMMIT_BRANCH"], "v1.2.3")
    with pytest.raises(UsageError, match="'nightly' is not one of branch, tag"):
        ci_local.pipeline_variables("nightly", GitRepo(repo))


def test_the_tag_pipeline_is_refused_before_any_job_naming_each_missing_variable(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    subprocess.run(["git", "-C", str(repo), "tag", "-a", "v0.1.0", "-m", "r"], check=True, timeout=30)
    with pytest.raises(UsageError) as exc:
        ci_local.run_ci_local("tag", repo_dir=repo, environ={"VEZA_PROD_SIGNING_PASSPHRASE": "pp"},
                              say=lambda _: None)
    line = exc.value.one_line()
    assert "release-prod job needs the CI variable(s) VEZA_PROD_SIGNING_KEY, PROD_KUBECONFIG, " \
           "VEZA_DEV_SIGNING_PUBLIC_KEY;" in line and "pp" not in line.replace("passphrase", "")
    assert not (repo / ".gitlab-ci-local").exists()
    # With a kept dev pair ci-local gives dev's public key itself; refused anyway, it reads no key at all.
    calls: list[int] = []

    def kept() -> tuple[str, str, str, str]:
        calls.append(1)
        return "k", "p", "pub", "/keys/dev"

    with pytest.raises(UsageError) as exc:
        ci_local.run_ci_local("tag", repo_dir=repo, environ={"VEZA_PROD_SIGNING_PASSPHRASE": "pp"},
                              say=lambda _: None, kept_dev_key=kept)
    assert "variable(s) VEZA_PROD_SIGNING_KEY, PROD_KUBECONFIG; " in exc.value.one_line() and not calls
    # The lists are the jobs' own: release-prod.sh and deploy-dev.sh require exactly these.
    for job, names in (("release-prod", ci_local.TAG_REQUIRES), ("deploy-dev", ci_local.BRANCH_REQUIRES)):
        assert f"ci_require {job} {' '.join(names)}\n" in (ROOT / f"ci/jobs/{job}.sh").read_text()


def test_the_branch_pipeline_is_refused_without_deploy_devs_variables(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(UsageError) as exc:
        ci_local.run_ci_local("branch", repo_dir=repo, environ={}, say=lambda _: None)
    line = exc.value.one_line()
    assert "the branch pipeline's deploy-dev job needs the CI variable(s) DEV_KUBECONFIG, VEZA_DEV_SIGNING_KEY, " \
           "VEZA_DEV_SIGNING_PASSPHRASE;" in line, line
    assert "VEZA_DEV_SIGNING_KEY: dev's cosign.key, its path or content" in line
    with pytest.raises(UsageError) as exc:   # ci-local makes dev's key variables itself from the kept pair
        ci_local.run_ci_local("branch", repo_dir=repo, environ={}, say=lambda _: None,
                              kept_dev_key=lambda: ("k", "p", "pub", "/keys/dev"))
    assert "variable(s) DEV_KUBECONFIG; " in exc.value.one_line()
    assert not (repo / ".gitlab-ci-local").exists()


def test_devs_kept_pair_becomes_the_three_variables_unless_the_caller_gives_devs_key(tmp_path: Path) -> None:
    def kept() -> tuple[str, str, str, str]:
        return "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n", "s3cret", "-----BEGIN PUBLIC KEY-----\n", "/k/dev"

    made, where = ci_local.dev_key_secrets(kept)
    assert made == {"VEZA_DEV_SIGNING_KEY": Secret("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n", file=True),
                    "VEZA_DEV_SIGNING_PASSPHRASE": Secret("s3cret"),
                    "VEZA_DEV_SIGNING_PUBLIC_KEY": Secret("-----BEGIN PUBLIC KEY-----\n", file=True)}
    assert where == "/k/dev"
    doc = yaml.safe_load(gitlab_ci_local.variables_file(made))   # the key and public half as File variables
    assert [doc["global"][n]["type"] for n in sorted(made)] == ["file", "variable", "file"]
    assert ci_local.makes_dev_key({}, {}, kept)
    # A passphrase given alone is the kept pair's own (dev's signing_passphrase_env): the pair is still read.
    assert ci_local.makes_dev_key(*ci_local.ci_variables({"VEZA_DEV_SIGNING_PASSPHRASE": "x"}), kept)
    for given in ("VEZA_DEV_SIGNING_KEY", "VEZA_DEV_SIGNING_PUBLIC_KEY"):   # the caller's win
        plain, secrets = ci_local.ci_variables({given: "-----BEGIN X-----\nabc\n"})
        assert secrets[given].file and not ci_local.makes_dev_key(plain, secrets, kept)
    assert not ci_local.makes_dev_key({}, {}, None)
    # The machine's key directory is this checkout's, not a job's: a job that signs writes its own.
    assert "VEZA_KEY_DIR" not in ci_local.ci_variables({"VEZA_KEY_DIR": str(tmp_path)})[0]


def test_the_kept_pair_is_made_once_and_read_back_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dev (auto_key) gets its pair made on first use and kept; the next pipeline reads the same one; a
    passphrase variable that does not open it is refused (exit 2), naming it."""
    from pipeline.core.config import load_config
    from pipeline.trust import envkeys
    from pipeline.trust.keys import decrypt_private_key, load_public_key

    monkeypatch.setenv("VEZA_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("VEZA_DEV_SIGNING_PASSPHRASE", raising=False)
    cfg = load_config(ROOT / "pipeline.toml", check_files=False)
    first = envkeys.kept_pair(cfg, cfg.env("dev"))
    assert envkeys.kept_pair(cfg, cfg.env("dev")) == first
    assert "s3cret" not in repr(first) and first.passphrase not in repr(first)
    key = decrypt_private_key(first.private_pem.encode(), first.passphrase.encode(), where="test")
    (tmp_path / "pub").write_text(first.public_pem)
    assert load_public_key(tmp_path / "pub").public_numbers() == key.public_key().public_numbers()
    monkeypatch.setenv("VEZA_DEV_SIGNING_PASSPHRASE", "not-the-kept-one")
    with pytest.raises(UsageError):
        envkeys.kept_pair(cfg, cfg.env("dev"))


def test_the_shell_runner_file_is_the_template_without_its_job_image(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    rel = ci_local.shell_runner_file(repo)
    ours, theirs = yaml.safe_load((repo / rel).read_text()), yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    assert "image" in theirs["default"] and "image" not in ours["default"]
    theirs["default"].pop("image")
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    assert rel.parts[0] == ".gitlab-ci-local" and ".gitlab-ci-local/" in (ROOT / ".gitignore").read_text()
    doc = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())
    doc["build"]["image"] = "golang:1.22"
    (repo / ".gitlab-ci.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(UsageError, match="job\\(s\\) build name their own image"):
        ci_local.shell_runner_file(repo)


def test_jobs_get_the_machines_network_settings_and_nothing_else_of_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tools.proc import tool_env

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/ca.crt")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("VEZA_REGISTRY_PASSWORD", "not-for-jobs")
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    env = tool_env(inherit=False)
    assert {"REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "PIP_FIND_LINKS", "PATH"} <= set(env)
    assert "VEZA_REGISTRY_PASSWORD" not in env and "DOCKER_HOST" not in env


def test_the_bootstrap_takes_the_uv_it_is_given_and_only_an_executable_one(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.machine import bootstrap as bs

    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("VEZA_UV", str(uv))
    assert bs.uv_binary() is None            # not executable
    uv.chmod(0o755)
    assert bs.uv_binary() == str(uv)
    monkeypatch.delenv("VEZA_UV")
    assert bs.uv_binary() is None            # none on PATH: pip, as on a fresh machine


def test_gitlab_ci_local_is_reinstalled_when_its_lock_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.machine import bootstrap as bs

    src = tmp_path / "src"
    src.mkdir()
    for name in ("package.json", "package-lock.json"):
        (src / name).write_text((ROOT / "ci/gitlab-ci-local" / name).read_text())
    monkeypatch.setattr(bs, "CI_LOCAL_SRC", src)
    before = bs.ci_local_stamp()
    lock = json.loads((src / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/gitlab-ci-local"]["version"] == "4.56.2"
    assert lock["packages"]["node_modules/gitlab-ci-local"]["integrity"].startswith("sha512-")
    lock["packages"]["node_modules/gitlab-ci-local"]["version"] = "4.56.3"
    (src / "package-lock.json").write_text(json.dumps(lock))
    assert bs.ci_local_stamp() != before
    assert "rsync" in bs.apt_packages(engine_cli=True, engine_daemon=True, tests=True)
    assert "rsync" not in bs.apt_packages(engine_cli=True, engine_daemon=True, tests=False)
