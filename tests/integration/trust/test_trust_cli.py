"""The gate as users meet it: `invoke verify-images` and `invoke deploy` on a project whose image is not
trusted exit 3 with one line naming the image, and nothing reaches the cluster (no Helm release)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.core.reporter import PlainReporter
from pipeline.local.cluster import kube_target
from pipeline.stages.sign import build_facts, sign_images
from pipeline.tools import helm
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from pipeline.trust.attach import Layer, attachment_tag, read_layers, write_layers
from pipeline.trust.keys import KeyPaths, decrypt_private_key, generate_key_pair
from pipeline.trust.provenance import attach_provenance, provenance_statement, sign_statement
from pipeline.trust.signing import sign_image
from tests.integration.trust.trust_fixtures import PASS_VARS, TrustWorld

ROOT = Path(__file__).resolve().parents[3]


def _invoke(w: TrustWorld, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_CONFIG": str(w.root / "pipeline.toml")}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "invoke"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def chart_project(trust_world: TrustWorld) -> TrustWorld:
    """The project's chart; this one-service project switches the chart's other services off."""
    chart = trust_world.root / "helm" / "veza"
    shutil.copytree(ROOT / "helm" / "veza", chart)
    values = yaml.safe_load((chart / "values-dev.yaml").read_text())
    for name in values["services"]:
        if name != "veza-docs":
            values["services"][name]["enabled"] = False
    (chart / "values-dev.yaml").write_text(yaml.safe_dump(values))
    return trust_world


@pytest.mark.registry
def test_verify_images_task_renders_the_chart_and_exits_3_on_an_unsigned_image(chart_project: TrustWorld) -> None:
    w = chart_project
    digest = w.push()
    w.manifest(digest)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    res = _invoke(w, "verify-images", "--env", "dev")
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"error: untrusted image {w.repository()}@{digest}: no signature" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.registry
def test_verify_images_task_passes_once_signed(chart_project: TrustWorld) -> None:
    w = chart_project
    digest = w.push()
    w.manifest(digest)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    signed = _invoke(w, "sign", "--env", "dev")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    res = _invoke(w, "verify-images", "--env", "dev")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 image(s) signed and attested" in res.stdout + res.stderr


def _untrusted(w: TrustWorld, case: str, tmp: Path) -> str:
    """Push an image and leave it untrusted in one way; returns its digest (the manifest records it)."""
    digest = w.push()
    man = w.manifest(digest)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    _, repo = split_repository(w.repository())
    if case == "other-key":
        other = generate_key_pair(KeyPaths(tmp / "other"), "x")
        w2 = decrypt_private_key(other.private.read_bytes(), b"x")
        sign_image(w.client, repo, digest, w2)
        facts = build_facts(w.cfg, man, "veza-docs", w.repository(), digest)
        attach_provenance(w.client, repo, digest, sign_statement(provenance_statement(facts), w2))
    elif case in ("tampered-provenance", "missing-provenance"):
        sign_images(w.cfg, w.cfg.env("dev"), man, PlainReporter(sink=lambda _l: None))
        if case == "missing-provenance":
            w.client.request("DELETE", f"/v2/{repo}/manifests/"
                             f"{w.client.head_manifest(repo, attachment_tag(digest, 'att')).digest}",  # type: ignore[union-attr]
                             ok=(202,))
        else:
            (att,) = read_layers(w.client, repo, attachment_tag(digest, "att")) or []
            env = json.loads(att.data)
            st = json.loads(base64.b64decode(env["payload"]))
            st["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["EVIL"] = "1"
            env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
            write_layers(w.client, repo, attachment_tag(digest, "att"),
                         [Layer(att.media_type, json.dumps(env).encode(), att.annotations)])
    return digest


@pytest.mark.cluster
@pytest.mark.parametrize(("case", "problem"), [
    ("unsigned", "no signature"),
    ("other-key", "not signed by a trusted key"),
    ("tampered-provenance", "provenance signature does not verify"),
    ("missing-provenance", "no provenance"),
])
def test_deploy_of_an_untrusted_image_stops_before_helm_upgrade(chart_project: TrustWorld, tmp_path: Path,
                                                               case: str, problem: str) -> None:
    w = chart_project
    digest = _untrusted(w, case, tmp_path)
    env = w.cfg.env("dev")
    res = _invoke(w, "deploy", "--env", "dev")
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"error: untrusted image {w.repository()}@{digest}:" in res.stderr and problem in res.stderr
    assert "Traceback" not in res.stderr and "helm upgrade" not in res.stdout
    assert helm.status(kube_target(env), env.helm_release) is None    # nothing was installed


@pytest.mark.registry
def test_keygen_needs_the_passphrase_variable_and_never_prints_it(chart_project: TrustWorld,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    w = chart_project
    secret = os.environ[PASS_VARS["dev"]]
    monkeypatch.delenv(PASS_VARS["dev"])
    res = _invoke(w, "keygen", "--env", "dev")
    assert res.returncode == 2 and f"error: {PASS_VARS['dev']} is not set" in res.stderr
    monkeypatch.setenv(PASS_VARS["dev"], secret)
    res = _invoke(w, "keygen", "--env", "dev")
    assert res.returncode == 0, res.stderr
    paths = envkeys.key_paths(w.cfg, w.cfg.env("dev"))
    assert paths.private.is_file() and not paths.private.is_relative_to(w.root)
    assert secret not in res.stdout + res.stderr and secret.encode() not in paths.private.read_bytes()
    again = _invoke(w, "keygen", "--env", "dev")
    assert again.returncode == 2 and "a signing key exists" in again.stderr
