"""The main job end to end: `invoke release --env local` from a fresh clone, on the real engine, the local
registry (127.0.0.1:5000), the real Trivy and the local Kubernetes cluster.

Then: a second run is a no-op, and a commit that changes one service releases only that service.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.release_support import remove_release
from tests.integration.trust.trust_fixtures import SigstoreVerify

ROOT = Path(__file__).resolve().parents[2]
INVOKE = ROOT / ".venv/bin/invoke"
pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, local_cluster: Path) -> Iterator[Path]:
    """A fresh clone of the committed tree; its release (namespace veza-local) is removed afterwards. A registry
    this module's release started is stopped at the session's end (tests/integration/cluster_fixtures.py)."""
    dest = tmp_path_factory.mktemp("e2e") / "veza"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=120)
    for k, v in (("user.email", "e2e@example.invalid"), ("user.name", "e2e")):
        subprocess.run(["git", "-C", str(dest), "config", k, v], check=True)
    yield dest
    remove_release(local_cluster, "veza-local")


def _invoke(clone: Path, *args: str, timeout: float = 3000) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_CONFIG": str(clone / "pipeline.toml"), "CI": "true"}
    return subprocess.run([str(INVOKE), "-r", str(ROOT), *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _manifest(clone: Path) -> dict[str, object]:
    return json.loads((clone / ".pipeline/local/manifest.json").read_text())  # type: ignore[no-any-return]


def _latest_report(clone: Path) -> dict[str, object]:
    runs = sorted((clone / ".pipeline/local/runs").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())  # type: ignore[no-any-return]


def test_release_local_end_to_end(clone: Path) -> None:
    first = _invoke(clone, "release", "--env", "local", "--yes")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    m = _manifest(clone)
    stages = m["stages"]  # type: ignore[index]
    for stage in ("build", "scan", "push", "sign", "verify-images", "deploy"):
        assert stages[stage]["status"] == "ok", (stage, stages)
    services = m["services"]  # type: ignore[index]
    assert set(services) == {"veza-backend-api", "veza-chat-server", "veza-stream-server", "veza-docs"}
    for name, svc in services.items():
        assert svc["scan"]["status"] == "pass", (name, svc["scan"])
        assert svc["push"]["digest"].startswith("sha256:"), name
        assert svc["deploy"]["status"] in ("deployed", "noop", "unchanged"), (name, svc["deploy"])
    report = _latest_report(clone)
    assert report["status"] == "ok"
    assert all(s["deployed"] and "@sha256:" in s["deployed"] for s in report["services"].values())  # type: ignore[union-attr]
    # post-release verification: every published digest re-read from the registry, signed, attested, with its SBOM
    published = report["published"]
    # the services and the infra images the release runs (core/release_images.py recorded_subjects)
    assert set(published) == set(services) | {"infra/postgres", "infra/redis", "infra/nats", "infra/prometheus"}, \
        published
    for name, checks in published.items():  # type: ignore[union-attr]
        assert (checks["signature"], checks["provenance"], checks["sbom"]) == ("ok", "ok", "present"), (name, checks)

    _assert_cluster_runs_the_manifest(clone)


def test_every_pod_of_the_release_runs_a_pinned_image_that_verifies(clone: Path, local_cluster: Path,
                                                                    sigstore_verify: SigstoreVerify) -> None:
    """After the release above: every container and init container of every pod in the namespace (services and
    infra alike) names `repository@sha256:…`, the kubelet reports running that digest (imageID), and each image
    verifies — by the pipeline's trust gate, and by @sigstore/verify (signature and provenance envelope as
    skopeo fetches them from the registry, no pipeline code reading them)."""
    from pipeline.core.config import load_config
    from pipeline.core.manifest import Manifest
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.verify_images import verify_images
    from pipeline.trust import envkeys
    from pipeline.trust.attach import attachment_tag

    pods = json.loads(subprocess.run(
        [str(ROOT / ".tools/bin/kubectl"), "--kubeconfig", str(local_cluster), "-n", "veza-local", "get", "pods",
         "-o", "json"], capture_output=True, text=True, timeout=60, check=True).stdout)["items"]
    images: dict[str, str] = {}   # image reference → the pod/container it was seen in
    for pod in pods:
        spec, status = pod["spec"], pod.get("status") or {}
        reported = {c["name"]: c.get("imageID", "") for c in
                    [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]}
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            where = f"{pod['metadata']['name']}/{c['name']}"
            assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", c["image"]), (where, c["image"])
            digest = c["image"].partition("@")[2]
            assert reported.get(c["name"], "").endswith("@" + digest), (where, c["image"], reported)
            images[c["image"]] = where
    m = _manifest(clone)
    infra = m["infra"]  # type: ignore[index]
    assert set(infra) == {"postgres", "redis", "nats", "prometheus"}, infra   # local: monitoring = "embedded"
    expected = {f"{r['push']['repository']}@{r['push']['digest']}"  # type: ignore[index]
                for r in [*m["services"].values(), *infra.values()]}  # type: ignore[union-attr]
    assert set(images) == expected, (sorted(images), sorted(expected))
    assert all("/veza-local/infra/" in ref for ref in expected if "/infra/" in ref)   # local's own namespace

    cfg = load_config(clone / "pipeline.toml")
    env = cfg.env("local")
    man = Manifest.load(clone / ".pipeline/local/manifest.json")
    summary = verify_images(cfg, env, man, PlainReporter(sink=lambda _line: None), images=sorted(images))
    assert summary.fields["images"] == len(images) == 8
    gate = _invoke(clone, "verify-images", "--env", "local")   # the CLI covers the infra documents too
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-2000:]
    assert all(ref in " ".join(gate.stdout.split()) for ref in expected if "/infra/" in ref), gate.stdout[-3000:]

    # Signatures are appended (one layer each: local and dev share veza-dev and sign with their own keys), so one
    # of the layers must be local's; likewise one provenance envelope.
    key = envkeys.key_paths(cfg, env).public.read_text()
    for ref in sorted(images):
        repository, _, digest = ref.partition("@")
        verdicts = []
        for sig_layer, payload in _skopeo_layers(f"{repository}:{attachment_tag(digest, 'sig')}"):
            assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest, ref
            verdicts.append(sigstore_verify({
                "publicKey": key, "artifact": base64.b64encode(payload).decode(),
                "signature": sig_layer["annotations"]["dev.cosignproject.cosign/signature"]}))
        assert any(v["ok"] for v in verdicts), (ref, verdicts)
        statements = []
        for _, envelope in _skopeo_layers(f"{repository}:{attachment_tag(digest, 'att')}"):
            got = sigstore_verify({"publicKey": key, "dsseEnvelope": json.loads(envelope)})
            if got["ok"]:
                statements.append(json.loads(base64.b64decode(got["payload"])))
        assert statements, ref
        assert [s["digest"] for s in statements[0]["subject"]] == [{"sha256": digest[7:]}], ref


def _skopeo_layers(ref: str) -> list[tuple[dict[str, Any], bytes]]:
    """The layers (descriptor, bytes) of an artifact as skopeo copies it from the registry."""
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{tmp}"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert got.returncode == 0, got.stderr
        layers = json.loads((Path(tmp) / "manifest.json").read_text())["layers"]
        return [(layer, (Path(tmp) / layer["digest"].split(":")[1]).read_bytes()) for layer in layers]


def _assert_cluster_runs_the_manifest(clone: Path) -> None:
    """`invoke status` exits 0, and per service the digest the cluster runs is the manifest's, all Ready."""
    status = _invoke(clone, "status", "--env", "local", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    running = json.loads(status.stdout)["services"]
    for name, svc in _manifest(clone)["services"].items():  # type: ignore[union-attr]
        assert running[name]["digest"] == svc["push"]["digest"], (name, running[name], svc["push"])
        assert running[name]["ready"] >= 1 and running[name]["ready"] == running[name]["replicas"], running[name]


def _until_prometheus_scrapes_the_release(clone: Path, kubeconfig: Path, timeout_s: float = 60) -> list[Any]:
    """The embedded Prometheus's `up` series of the release's pods, once each of the four services has one
    target with up == 1 (polled, at most `timeout_s`); asked through the pipeline's port-forward on
    127.0.0.1:21300-21399. AssertionError with the last answer otherwise."""
    from pipeline.core.config import load_config
    from pipeline.stages.deploy.monitoring import prometheus_url
    from pipeline.tools import prometheus

    env = load_config(clone / "pipeline.toml").env("local")
    services = {"veza-backend-api", "veza-chat-server", "veza-stream-server", "veza-docs"}
    os.environ["VEZA_PORT_FORWARD_PORTS"] = "21300-21399"
    try:
        with prometheus_url(env, kubeconfig=kubeconfig) as url:
            deadline, series = time.monotonic() + timeout_s, []
            while time.monotonic() < deadline:
                series = prometheus.query(url, 'up{job="veza-pods"}')
                if {x.labels.get("service") for x in series if x.value == 1} >= services:
                    return series
                time.sleep(2)
    finally:
        os.environ.pop("VEZA_PORT_FORWARD_PORTS", None)
    raise AssertionError(f"Prometheus does not scrape every service within {timeout_s:.0f}s: "
                         f"{[(x.labels, x.value) for x in series]}")


def test_the_embedded_prometheus_scrapes_the_release_and_status_says_so(clone: Path, local_cluster: Path) -> None:
    """After the release above: the embedded Prometheus (monitoring = "embedded") discovered the release's pods
    through the API server (its sidecar, the `kubernetes` Service's endpoint on the bridge gateway), scrapes each
    service's /metrics with up == 1, labelled by the seed guide's relabelling (namespace, service, environment,
    track from veza.io/track), and `invoke status` reports it up, with the four services among its targets."""
    t0 = time.monotonic()
    series = _until_prometheus_scrapes_the_release(clone, local_cluster)
    up = {x.labels["service"]: x.labels for x in series if x.value == 1}
    up_pods = {p["metadata"]["name"] for p in json.loads(subprocess.run(
        [str(ROOT / ".tools/bin/kubectl"), "--kubeconfig", str(local_cluster), "-n", "veza-local", "get", "pods",
         "-o", "json"], capture_output=True, text=True, timeout=60, check=True).stdout)["items"]}
    for name in ("veza-backend-api", "veza-chat-server", "veza-stream-server", "veza-docs"):
        labels = up[name]
        assert (labels["namespace"], labels["environment"], labels["track"]) == ("veza-local", "local", "stable"), \
            labels
        assert labels["pod"] and labels["pod"] in up_pods, labels
    status = _invoke(clone, "status", "--env", "local", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    mon = json.loads(status.stdout)["monitoring"]
    assert (mon["source"], mon["where"], mon["up"]) == ("embedded", "svc/prometheus in veza-local", True), mon
    assert mon["targets_up"] == mon["targets"] >= 4, mon
    assert sorted(mon["scraped"]) == sorted(up) and mon["unscraped"] == [], mon
    text = _invoke(clone, "status", "--env", "local")
    assert text.returncode == 0, text.stdout + text.stderr
    said = " ".join(text.stdout.split())   # the reporter may wrap the line
    assert "monitoring: embedded Prometheus at svc/prometheus in veza-local: up," in said, text.stdout
    assert "; scraping veza-backend-api, veza-chat-server, veza-stream-server, veza-docs" in said, text.stdout
    print(f"prometheus checks took {time.monotonic() - t0:.1f}s")


def test_second_release_is_a_noop(clone: Path) -> None:
    t0 = time.monotonic()
    again = _invoke(clone, "release", "--env", "local", "--yes")
    took = time.monotonic() - t0
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    report = _latest_report(clone)
    assert {s["name"]: s["status"] for s in report["stages"]} == {  # type: ignore[union-attr]
        "build": "resumed", "scan": "resumed", "push": "resumed", "sign": "resumed",
        "verify-images": "ok",   # the trust gate is never taken from the record
        "migrate": "resumed",    # the database is still at the recorded schema version (read from it)
        "deploy": "resumed"}
    assert took < 20, f"no-op release took {took:.1f}s"   # migrate's holds() asks the database with a Job


def test_one_changed_service_releases_only_it(clone: Path) -> None:
    before = _manifest(clone)["services"]  # type: ignore[index]
    page = clone / "services/docs/site/index.html"
    # Unique content: an image built earlier from the same inputs would (rightly) be reused.
    page.write_text(page.read_text().replace("</body>", f"<!-- e2e change {uuid.uuid4().hex} --></body>"))
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "docs: e2e change"], check=True)
    run = _invoke(clone, "release", "--env", "local", "--yes")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    after = _manifest(clone)["services"]  # type: ignore[index]
    assert after["veza-docs"]["build"]["status"] == "built"
    assert after["veza-docs"]["push"]["digest"] != before["veza-docs"]["push"]["digest"]
    for name in ("veza-backend-api", "veza-chat-server", "veza-stream-server"):
        assert after[name]["build"]["status"] == "reused", name
        assert after[name]["push"]["digest"] == before[name]["push"]["digest"], name


def test_stage_tasks_chain_with_no_flags(clone: Path) -> None:
    """`invoke build && invoke smoke && invoke deploy`: every task defaults to the same environment (local)
    and works on its manifest; each stage is recorded by the runner."""
    for task in ("build", "smoke", "deploy"):
        run = _invoke(clone, task)
        assert run.returncode == 0, (task, run.stdout[-4000:] + run.stderr[-2000:])
    stages = _manifest(clone)["stages"]  # type: ignore[index]
    for stage in ("build", "smoke", "deploy"):
        assert stages[stage]["status"] == "ok", (stage, stages[stage])
    _assert_cluster_runs_the_manifest(clone)

def test_release_after_cluster_down_brings_it_up_and_deploys(clone: Path, cluster_to_myself: Path) -> None:
    """The journal says "deployed"; the cluster is gone (as after a reboot): the release must look, not trust.
    (cluster_to_myself: no other test uses the cluster meanwhile.)"""
    down = _invoke(clone, "cluster-down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    run = _invoke(clone, "release", "--env", "local", "--yes")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "cluster: not running; starting it" in run.stdout, run.stdout[-4000:]
    report = _latest_report(clone)
    stages = {s["name"]: s["status"] for s in report["stages"]}  # type: ignore[union-attr]
    assert stages["build"] == "resumed" and stages["push"] == "resumed", stages
    assert stages["deploy"] in ("ok", "resumed"), stages   # resumed only if the restarted cluster already ran it all
    _assert_cluster_runs_the_manifest(clone)
    # the restarted API server is reachable from pods again (relay and endpoint): Prometheus discovers the release
    _until_prometheus_scrapes_the_release(clone, cluster_to_myself)
