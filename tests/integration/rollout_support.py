"""What the progressive-rollout cluster tests share (test_deploy_canary.py, test_deploy_bluegreen.py): builds of
veza-docs pushed to the machine's registry (a copy with an injected fault among them), a Prometheus scrape
configuration fed by file_sd targets computed from the namespace's pods every second (Debian's Prometheus has no
Kubernetes discovery here; the host routes to pod IPs), labelled namespace/service/track as the seed's pod
relabelling does."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pipeline.core.config import Config, load_config
from pipeline.core.config_rollout import Rollout
from pipeline.core.manifest import Manifest
from pipeline.core.paths import ROOT
from pipeline.stages.deploy import deploy_release
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget
from tests.e2e.release_support import kill_port_forwards
from tests.integration.build_records import built_record
from tests.integration.deploy_support import TEST_COMMIT, LinesReporter, sh, sign_manifest, with_test_keys

SERVICE = "veza-docs"
SCRAPE = """
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: veza-pods
    file_sd_configs:
      - files: [/etc/prometheus/sd/*.json]
        refresh_interval: 1s
"""
# services/docs/main.go's "/" handler, whose start a fault replaces (the replacement keeps it going)
DOCS_HANDLER = '\ts.Handle("/", func(w http.ResponseWriter, r *http.Request) {\n'


def build_docs(cfg: Config, repo: str, run: str, name: str, context: Path, version: str) -> str:
    """veza-docs built from `context` with the project's Dockerfile and builder; pushed to `repo`:`name`; its
    digest. The image is removed from the engine once pushed."""
    from pipeline.tools import buildkit

    svc = cfg.service(SERVICE)
    tag = f"{repo.split('/', 1)[1]}:{run}-{name}"
    args = {cfg.bases[b].build_arg: cfg.bases[b].local for b in svc.bases if cfg.bases[b].build_arg}
    lines: list[str] = []
    iid = Path(f"/tmp/{run}-{name}.iid")
    rc = buildkit.build(buildkit.detect(cfg.build.builder), context=context, dockerfile=svc.dockerfile, tags=[tag],
                        build_args={**args, "VERSION": version}, labels={"veza.pipeline.run": run}, no_cache=False,
                        on_line=lines.append, timeout=900, iidfile=iid)
    iid.unlink(missing_ok=True)
    iid.with_suffix(".legacy.Dockerfile").unlink(missing_ok=True)
    assert rc == 0, f"build of {name} failed:\n" + "\n".join(lines[-30:])
    digest_file = Path(f"/tmp/{run}-{name}.digest")
    try:
        sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
           f"docker-daemon:{tag}", f"docker://{repo}:{name}")
        return digest_file.read_text().strip()
    finally:
        digest_file.unlink(missing_ok=True)
        sh("docker", "rmi", tag, check=False)


def faulty_docs(cfg: Config, dest: Path, fault: str) -> Path:
    """A copy of services/docs at `dest` whose "/" handler starts with `fault` (Go code that declares
    `var served atomic.Uint64` and ends by opening the handler, as DOCS_HANDLER does); nothing in the project knows
    of it."""
    shutil.copytree(cfg.service(SERVICE).context, dest)
    main = (dest / "main.go").read_text()
    assert DOCS_HANDLER in main, "services/docs/main.go changed: update the rollout tests' fault"
    (dest / "main.go").write_text(main.replace(DOCS_HANDLER, fault).replace('"path/filepath"\n',
                                                                             '"path/filepath"\n\t"sync/atomic"\n'))
    return dest


def kubectl_argv(kubeconfig: Path) -> list[str]:
    return [kubectl.kubectl(), "--kubeconfig", str(kubeconfig)]


class PodTargets(threading.Thread):
    """Every second, the namespace's running pods as Prometheus file_sd targets (ip:port with namespace, service
    and track labels), written by an atomic rename into `sd_dir`."""

    def __init__(self, kubeconfig: Path, namespace: str, sd_dir: Path, port: int) -> None:
        super().__init__(daemon=True)
        self.kubeconfig, self.namespace, self.sd_dir, self.port = kubeconfig, namespace, sd_dir, port
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1):
            res = subprocess.run([*kubectl_argv(self.kubeconfig), "-n", self.namespace, "get", "pods", "-o", "json"],
                                 capture_output=True, text=True, timeout=20, check=False)
            if res.returncode != 0:
                continue
            groups = [{"targets": [f"{p['status']['podIP']}:{self.port}"],
                       "labels": {"namespace": self.namespace,
                                  "service": p["metadata"]["labels"].get("app.kubernetes.io/name", ""),
                                  "track": p["metadata"]["labels"].get("veza.io/track", ""),
                                  "pod": p["metadata"]["name"]}}
                      for p in json.loads(res.stdout)["items"]
                      if p.get("status", {}).get("podIP") and p["status"].get("phase") == "Running"]
            tmp = self.sd_dir / ".targets.json.tmp"
            tmp.write_text(json.dumps(groups))
            tmp.chmod(0o644)
            tmp.rename(self.sd_dir / "targets.json")


def sd_dir(tmp: Path) -> Path:
    """An empty file_sd directory Prometheus (another user in its container) can read."""
    sd = tmp / "sd"
    sd.mkdir()
    sd.chmod(0o755)
    (sd / "targets.json").write_text("[]")
    (sd / "targets.json").chmod(0o644)
    return sd


def rollout_config(namespace: str, state: Path, rollout: Rollout) -> Config:
    """The tree's configuration with only `local`, releasing into `namespace` by `rollout`, its state and the
    test's signing keys under `state` (no local infra: the chart's own Secret keys are generated)."""
    base = load_config(ROOT / "pipeline.toml", check_files=False)
    env = dataclasses.replace(base.env("local"), namespace=namespace, helm_release="veza", local_infra=False,
                              generate_secrets=True, rollout=rollout)
    return with_test_keys(dataclasses.replace(base, state_dir=state, environments={"local": env}), state / "keys")


@dataclasses.dataclass
class RolloutTarget:
    """A rollout cluster test's release of veza-docs: its config, cluster, namespace, state, Prometheus and the
    digests of its builds (name → digest) in `repository` (each test's own)."""

    repository: ClassVar[str]
    cfg: Config
    kubeconfig: Path
    namespace: str
    state: Path
    prometheus: str
    digests: dict[str, str]

    @property
    def env(self) -> Any:
        return self.cfg.env("local")

    @property
    def rt(self) -> ReleaseTarget:
        return ReleaseTarget(self.env, KubeTarget(self.kubeconfig, "", self.namespace), "veza")

    def manifest(self, build: str) -> Manifest:
        """A manifest of veza-docs at the digest of `build`, signed with the test's key."""
        path = self.state / "manifest.json"
        path.unlink(missing_ok=True)
        m = Manifest.new(path, env="local", release_id=f"test-{build}", version={"sha": TEST_COMMIT})
        m.set_service(SERVICE, repository=self.repository, tags=[build], input_digest="sha256:test")
        m.record(SERVICE, "build", built_record("sha256:" + "b" * 64, TEST_COMMIT))
        m.record(SERVICE, "push", {"status": "pushed", "digest": self.digests[build], "tags_pushed": [build]})
        sign_manifest(self.cfg, self.env, m)
        return m

    def deploy(self, build: str, out: LinesReporter) -> Manifest:
        m = self.manifest(build)
        t0 = time.monotonic()
        try:
            deploy_release(self.cfg, self.env, m, [SERVICE], kubeconfig=self.kubeconfig, timeout_s=120, reporter=out)
        finally:
            print(f"deploy of {build} ended after {time.monotonic() - t0:.1f}s:\n{out.text}")
        return m


@contextlib.contextmanager
def health_answers(target: RolloutTarget, resource: str) -> Iterator[list[int]]:
    """GET /health of `resource` (a pod or a Deployment of the target's namespace) through a port-forward on
    127.0.0.1, every 0.5 s while the block runs: the statuses, in order (0: no answer within 3 s)."""
    answers: list[int] = []
    halt = threading.Event()

    def probe() -> None:
        with kubectl.port_forward(KubeTarget(target.kubeconfig, "", target.namespace), resource, 8083) as port:
            while not halt.wait(0.5):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
                        answers.append(r.status)
                except OSError:
                    answers.append(0)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        yield answers
    finally:
        halt.set()
        prober.join(timeout=30)


_KILLABLE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pipeline.core.manifest import Manifest
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.deploy import deploy_release
    from {module} import target_config
    a = json.loads(sys.argv[1])
    cfg = target_config(a["ns"], Path(a["state"]), a["prometheus"])
    deploy_release(cfg, cfg.env("local"), Manifest.load(Path(a["state"]) / "manifest.json"), ["veza-docs"],
                   timeout_s=120, kubeconfig=Path(a["kubeconfig"]), reporter=PlainReporter(verbose=True))
""")


@dataclasses.dataclass
class KillableDeploy:
    """A deploy running in a process group of its own, its port-forwards on `port_range` alone."""

    proc: subprocess.Popen[str]
    namespace: str
    port_range: str

    def kill(self) -> str:
        """SIGKILL the deploy and its children (like a killed CI job), then the port-forwards it left (each runs in
        a session of its own), only those of its range: the test's own forwards of the namespace live on. Returns
        the deploy's output."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        output = self.proc.communicate(timeout=30)[0]
        kill_port_forwards(self.namespace, self.port_range)
        return output


def start_killable_deploy(module: str, target: RolloutTarget, port_range: str) -> KillableDeploy:
    """The deploy of the target's recorded manifest, configured by `module`'s target_config, forwarding from
    `port_range` ("LO-HI", kept apart from the test's own forwards); its output on stdout."""
    args = {"ns": target.namespace, "state": str(target.state), "kubeconfig": str(target.kubeconfig),
            "prometheus": target.prometheus}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE.format(module=module), json.dumps(args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, kubectl.PORT_RANGE_ENV: port_range})
    return KillableDeploy(proc, target.namespace, port_range)
