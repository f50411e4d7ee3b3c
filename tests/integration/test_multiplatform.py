"""Multi-platform images on the real engine (BuildKit through Debian's 20.10 CLI), a real private registry on
127.0.0.1:19100-19149 and skopeo: the real Go services (copied into a throw-away git project) built for
linux/amd64 and linux/arm64 by cross-compilation, pushed as children by digest plus one OCI image index.

- the registry's raw manifest of a pushed tag is an index with the two children of the right platforms
  (`skopeo inspect --raw`), and each child's config names its architecture;
- a rerun is a no-op (reused, push skipped); a one-file change rebuilds both platforms of that service only;
- the arm64 binary, extracted from its image, answers /health and `-healthcheck` under qemu-aarch64-static.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import load_config
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import CACHE_REPO
from pipeline.local.registry import LocalRegistry
from pipeline.release.runner import run_command
from tests.integration.build_fixtures import MiniProject
from tests.ports import PortPool

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]
free_port = PortPool(range(19100, 19150)).take
QEMU = "/usr/bin/qemu-aarch64-static"

CONFIG = """
[project]
name = "multi"
source_url = "https://example.invalid/multi"

[registry]
address = "{registry}"
namespace = "multi-{run}"

[build]
builder = "buildkit"

[bases.golang]
upstream = "{go_upstream}"
local = "{go_local}"
recipe = "golang"
build_arg = "GO_IMAGE"

[bases.rust]
upstream = "{rust_upstream}"
local = "{rust_local}"
recipe = "rust"
build_arg = "RUST_IMAGE"
{services}
[environments.dev]
namespace = "multi-dev"
values_file = "values.yaml"
stages = ["build", "push"]
tags = ["sha", "branch"]
platforms = ["linux/amd64", "linux/arm64"]
"""


def _skopeo(*args: str) -> Any:
    res = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(res.stdout)


SERVICE = """
[[services]]
name = "{run}-{short}"
context = "services/{svc}"
dockerfile = "dockerfiles/veza-{svc}.Dockerfile"
port = {port}
bases = ["{base}"]
"""
# The real services: (directory, short name, base)
GO_SERVICES = (("backend-api", "api", "golang"), ("stream-server", "stream", "golang"))
RUST_SERVICES = (("chat-server", "chat", "rust"),)


@pytest.fixture(params=["go", "rust"])
def multi(request: pytest.FixtureRequest, tmp_path: Path,
          docker_client: Any) -> Iterator[tuple[MiniProject, LocalRegistry]]:
    """A git project holding copies of the real Go services (param "go") or the Rust one ("rust")."""

    from pipeline.local.bases import ensure_bases

    main_cfg = load_config()
    ensure_bases(config=main_cfg, say=lambda _line: None)
    go, rust = main_cfg.bases["golang"], main_cfg.bases["rust"]
    run = "m" + uuid.uuid4().hex[:7]
    services = GO_SERVICES if request.param == "go" else RUST_SERVICES
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        proj = MiniProject(tmp_path / "multi", run)
        proj.root.mkdir()
        blocks = "".join(SERVICE.format(run=run, short=short, svc=svc, port=9201 + i, base=base)
                         for i, (svc, short, base) in enumerate(services))
        proj.write("pipeline.toml", CONFIG.format(run=run, registry=reg.address, go_upstream=go.upstream,
                                                  go_local=go.local, rust_upstream=rust.upstream,
                                                  rust_local=rust.local, services=blocks))
        for svc, _, _ in services:
            shutil.copytree(REPO_ROOT / "services" / svc, proj.root / "services" / svc)
            df = f"dockerfiles/veza-{svc}.Dockerfile"
            proj.write(df, (REPO_ROOT / df).read_text())
        proj.init_repo()
        proj.commit("feat: initial")
        try:
            yield proj, reg
        finally:
            _remove_images(docker_client, run)


def _remove_images(client: Any, run: str) -> None:
    """Every image this test built: the services' tags and the per-platform cache tags."""
    doomed: list[str] = []
    for img in client.api.images(filters={"label": "veza.pipeline.input-digest"}):
        tags = img.get("RepoTags") or []
        if any(f"/multi-{run}/" in t or t.startswith(f"{CACHE_REPO}/{run}-") for t in tags):
            doomed.append(img["Id"])
    for image_id in doomed:
        try:
            client.api.remove_image(image_id, force=True)
        except Exception:  # already gone
            pass


def _run(p: MiniProject, stages: list[str]) -> list[str]:
    lines: list[str] = []
    cfg = p.config
    run_command(cfg, cfg.env("dev"), stages, PlainReporter(verbose=True, sink=lines.append), services=[])
    return lines


def _manifest(p: MiniProject) -> Manifest:
    return Manifest.load(p.root / ".pipeline/dev/manifest.json")


def _extract(client: Any, image_id: str, path: str, dest: Path) -> Path:
    """Copy one file out of an image (a created, never started container), mode kept."""
    container = client.api.create_container(image_id, command=["-healthcheck"])
    try:
        stream, _ = client.api.get_archive(container["Id"], path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            tar.extractall(dest)
    finally:
        client.api.remove_container(container["Id"], force=True, v=True)
    return dest / Path(path).name


@pytest.mark.parametrize("multi", ["go"], indirect=True)
def test_index_of_two_platforms_rebuilds_per_service_and_arm64_runs_under_qemu(
        multi: tuple[MiniProject, LocalRegistry], docker_client: Any, tmp_path: Path) -> None:
    p, reg = multi
    api, stream = f"{p.run}-api", f"{p.run}-stream"
    lines = _run(p, ["build", "push"])
    assert any(ln.startswith(f"platforms: {api}: linux/amd64, linux/arm64 (environments.dev.platforms)")
               for ln in lines), lines
    m = _manifest(p)
    for name in (api, stream):
        built = m.built(name)
        assert built is not None and set(built.platform_images) == {"linux/amd64", "linux/arm64"}
        assert built.image_id == built.platform_images["linux/amd64"]         # the engine's own platform
        arches = {plat: docker_client.api.inspect_image(i)["Architecture"] for plat, i in built.platform_images.items()}
        assert arches == {"linux/amd64": "amd64", "linux/arm64": "arm64"}
        pushed = m.pushed(name)
        assert pushed is not None and pushed.ok and set(pushed.children) == {"linux/amd64", "linux/arm64"}
        for tag in pushed.tags:
            # The registry, asked by another tool: the tag is an OCI index of the two platforms.
            raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed.repository}:{tag}")
            assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
            by_platform = {f"{c['platform']['os']}/{c['platform']['architecture']}": c["digest"]
                           for c in raw["manifests"]}
            assert by_platform == dict(pushed.children)
        for plat, child in pushed.children.items():
            config = _skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                             f"docker://{pushed.repository}@{child}")
            assert f"{config['os']}/{config['architecture']}" == plat
        first_images = {n: dict(m.built(n).platform_images) for n in (api, stream)}  # type: ignore[union-attr]
        assert first_images[name]

    # SBOMs: the scan stage's SBOM (made here by Trivy from the local native image, as the scan stage does)
    # goes on the index and the amd64 child; the arm64 child gets a Trivy SBOM of its own image.
    _sboms_per_child(p, m, api, tmp_path, docker_client)

    # A rerun: nothing rebuilt, nothing pushed; the runner's resume checks hold against the registry.
    _run(p, ["build", "push"])
    m2 = _manifest(p)
    assert {n: str(m2.service(n)["build"]["status"]) for n in (api, stream)} == {api: "reused", stream: "reused"}
    # The push itself, run again: "already there?" holds by HEAD requests alone (index under every tag,
    # every child present), nothing exported or uploaded.
    from pipeline.stages.push import push_images

    summary = push_images(p.config, p.config.env("dev"), m2, PlainReporter(sink=lambda _line: None))
    assert summary.fields["skipped"] == 2 and summary.fields["pushed"] == 0
    assert {n: m2.service(n)["push"]["method"] for n in (api, stream)} == {api: "none", stream: "none"}
    assert m2.pushed(api).digest == m.pushed(api).digest                          # type: ignore[union-attr]

    # The world changes: the registry loses the arm64 child. The resume check says so, the push restores it.
    from pipeline.stages.push import registry_serves
    from pipeline.tools.registry_api import RegistryClient, split_repository

    lost = m2.pushed(stream).children["linux/arm64"]                              # type: ignore[union-attr]
    address, path = split_repository(m2.pushed(stream).repository)                 # type: ignore[union-attr]
    RegistryClient(address).request("DELETE", f"/v2/{path}/manifests/{lost}", ok=(202,))
    why = registry_serves(p.config, m2, [stream])
    assert why == (f"registry no longer has the linux/arm64 image {lost[:19]} of "
                   f"{m2.pushed(stream).repository}@{m2.pushed(stream).digest[:19]}")    # type: ignore[union-attr]
    again = push_images(p.config, p.config.env("dev"), m2, PlainReporter(sink=lambda _line: None), [stream])
    assert again.fields["pushed"] == 1 and m2.pushed(stream).children["linux/arm64"] == lost  # type: ignore
    assert registry_serves(p.config, m2, [stream]) is None

    # One file changed in one service: both of its platforms rebuilt, the other service reused.
    main_go = p.root / "services/backend-api/main.go"
    main_go.write_text(main_go.read_text() + "\n// one more line\n")
    p.commit("fix(api): one line")
    _run(p, ["build", "push"])
    m3 = _manifest(p)
    assert m3.service(api)["build"]["status"] == "built" and m3.service(stream)["build"]["status"] == "reused"
    assert m3.service(api)["build"]["why"] == "main.go modified"
    new_api = m3.built(api).platform_images                                        # type: ignore[union-attr]
    assert all(new_api[plat] != first_images[api][plat] for plat in new_api), (new_api, first_images[api])
    assert m3.built(stream).platform_images == first_images[stream]                # type: ignore[union-attr]
    log = Path(m3.service(api)["build"]["log"]).read_text()
    assert f"=== {api} for linux/amd64 ===" in log and f"=== {api} for linux/arm64 ===" in log
    assert m3.pushed(api).digest != m.pushed(api).digest                           # type: ignore[union-attr]
    assert m3.pushed(stream).digest == m.pushed(stream).digest                     # type: ignore[union-attr]

    # The arm64 binary, out of its image: an aarch64 ELF that serves /health under qemu (no binfmt needed).
    _answers_under_qemu(docker_client, new_api["linux/arm64"], "/app/veza-backend-api", tmp_path / "arm64")


@pytest.mark.parametrize("multi", ["rust"], indirect=True)
def test_rust_service_cross_compiles_for_arm64(multi: tuple[MiniProject, LocalRegistry], docker_client: Any,
                                               tmp_path: Path) -> None:
    """Debian's rustc with the arm64 standard library from Debian's arm64 packages and gcc-aarch64-linux-gnu:
    a static arm64 chat server in the index beside the amd64 one, answering under qemu."""
    p, _ = multi
    chat = f"{p.run}-chat"
    _run(p, ["build", "push"])
    m = _manifest(p)
    built, pushed = m.built(chat), m.pushed(chat)
    assert built is not None and pushed is not None and pushed.ok
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed.repository}:{pushed.tags[0]}")
    assert sorted(c["platform"]["architecture"] for c in raw["manifests"]) == ["amd64", "arm64"]
    _answers_under_qemu(docker_client, built.platform_images["linux/arm64"], "/app/veza-chat-server",
                        tmp_path / "arm64")


def _sboms_per_child(p: MiniProject, m: Manifest, name: str, tmp_path: Path, docker_client: Any) -> None:
    from pipeline.stages.sbom import attach_sboms, sbom_tag
    from pipeline.tools import trivy

    built, pushed = m.built(name), m.pushed(name)
    assert built is not None and built.image_id and pushed is not None
    scan_sbom = trivy.sbom_image(built.image_id, tmp_path / "scan" / "sbom.cdx.json",
                                 cache_dir=trivy.default_cache_dir(p.config.scan.db_repository))
    m.record(name, "scan", {"status": "pass", "sbom": str(scan_sbom)})
    refs = attach_sboms(p.config, m, PlainReporter(sink=lambda _line: None), [name])
    assert refs[name] == f"{pushed.repository}:{sbom_tag(str(pushed.digest))}"
    rec = m.stage_result(name, "sbom") or {}
    assert set(rec["children"]) == {"linux/amd64", "linux/arm64"}
    for plat, child in pushed.children.items():
        assert rec["children"][plat] == f"{pushed.repository}:{sbom_tag(child)}"
        art = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{rec['children'][plat]}")
        (layer,) = art["layers"]
        out = tmp_path / f"sbom-{plat.replace('/', '-')}"
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{rec['children'][plat]}",
                        f"dir:{out}"], capture_output=True, timeout=60, check=True)
        doc = json.loads((out / layer["digest"].split(":")[1]).read_text())
        props = {pr["name"]: pr["value"] for pr in doc["metadata"]["component"].get("properties", [])}
        assert props["aquasecurity:trivy:ImageID"] == built.platform_images[plat]   # each child's own SBOM


def _answers_under_qemu(docker_client: Any, image_id: str, path: str, dest: Path) -> None:
    """The binary at `path` in the arm64 image is a static aarch64 ELF that, run by qemu-aarch64-static,
    serves /health and passes its own `-healthcheck`."""
    binary = _extract(docker_client, image_id, path, dest)
    head = binary.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183     # EM_AARCH64
    assert os.path.exists(QEMU), "qemu-user-static missing: python3 -m pipeline.machine.bootstrap --tests installs it"
    port = free_port()
    # the backend refuses to start without a JWT_SECRET of 32 bytes (RFC 7518 §3.2); a throwaway value here, and no
    # database: /health does not need one
    env = {"PATH": "/usr/bin:/bin", "LISTEN_ADDR": f"127.0.0.1:{port}", "JWT_SECRET": "qemu-test-" + "x" * 32,
           "MIGRATE_ON_START": "false"}
    server = subprocess.Popen([QEMU, str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = _get_health(port, server)
        assert b"ok" in body
        check = subprocess.run([QEMU, str(binary), "-healthcheck"], env=env, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get_health(port: int, server: subprocess.Popen[bytes], timeout_s: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err = server.stderr.read() if server.stderr else b""
            raise AssertionError(f"the arm64 server exited {server.returncode}: {err!r}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return bytes(r.read())
        except OSError:   # refused while it starts; TimeoutError is an OSError
            time.sleep(0.3)
    raise AssertionError(f"the arm64 server did not answer /health on 127.0.0.1:{port} in {timeout_s:.0f}s")
