"""Promote staging → prod against real registries: same digests, gates, nothing built or pulled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.local.registry import LocalRegistry
from pipeline.tools.registry_api import RegistryClient, split_repository
from tests.integration.registry_fixtures import free_port, make_manifest, run_promote, run_push, write_config

pytestmark = [pytest.mark.engine, pytest.mark.registry]
TAGS = ["sha-abcdef1", "main"]
PROD_TAGS = ["1.4.2", "1.4"]


def _our_image_events(engine: Any, since: float, until: float, marker: str) -> list[dict[str, Any]]:
    """Engine image events (pull, tag, build...) that name one of this test's repositories.

    The engine is shared with other engineers' builds: only events naming our repositories count.
    """
    events = engine.events(since=int(since), until=int(until) + 1, decode=True, filters={"type": "image"})
    # The API's `since` has one-second resolution: drop what happened earlier in that second (the push).
    return [e for e in events if marker in str(e) and e.get("timeNano", 0) >= int(since * 1e9)]


@pytest.mark.parametrize("via", ["skopeo", "registry-api"])
def test_promote_staging_to_prod_same_digest_nothing_built_or_pulled(
        tmp_path: Path, registry: LocalRegistry, image_factory: Any, engine: Any, run_id: str, via: str) -> None:
    # skopeo copies across two registries; the registry-API path stays inside one (blob mounts).
    prod_reg = LocalRegistry(free_port(), root=tmp_path / "prod-registry") if via == "skopeo" else registry
    with prod_reg if prod_reg is not registry else registry:
        cfg = write_config(tmp_path / "pipeline.toml", namespace=run_id,
                           registries={"staging": registry.address, "prod": prod_reg.address},
                           promote_requires={"prod": ["scan", "smoke"]})
        staging = cfg.env("staging")
        images = [image_factory(s, staging.repository(cfg.service(s)), TAGS) for s in ("svc-a", "svc-b")]
        man = make_manifest(tmp_path / "manifest.json", cfg, "staging", images)
        pushed = run_push(None, "staging", config=cfg, manifest=man, log=lambda s: None)

        # Gate: no scan/smoke verdicts yet → refused (exit 3), nothing copied.
        with pytest.raises(PolicyBlocked) as blocked:
            run_promote("staging", "prod", None, config=cfg, manifest=man, via=via, log=lambda s: None)
        assert blocked.value.exit_code == 3 and "svc-a (scan: no result)" in blocked.value.message
        prod_client = RegistryClient(prod_reg.address)
        prod = cfg.env("prod")
        for img in images:
            assert prod_client.head_manifest(split_repository(prod.repository(cfg.service(img.service)))[1],
                                             PROD_TAGS[0]) is None
        man.record("svc-a", "scan", {"status": "pass"})
        man.record("svc-b", "scan", {"status": "pass"})
        man.record("svc-a", "smoke", {"status": "pass"})
        man.record("svc-b", "smoke", {"status": "fail"})
        with pytest.raises(PolicyBlocked, match=r"svc-b \(smoke: fail\)"):
            run_promote("staging", "prod", None, config=cfg, manifest=man, via=via, log=lambda s: None)
        man.record("svc-b", "smoke", {"status": "pass"})

        ours = f"{run_id}-prod"
        before = [t for i in engine.images.list() for t in i.tags if ours in t]
        assert before == []
        t0 = time.time()
        res = run_promote("staging", "prod", None, config=cfg, manifest=man, via=via, log=print)
        t1 = time.time()
        assert {r["status"] for r in res.values()} == {"promoted"}
        for img in images:
            _, path = split_repository(prod.repository(cfg.service(img.service)))
            for tag in PROD_TAGS:  # verified through the registry API, not the tool's word
                ref = prod_client.head_manifest(path, tag)
                assert ref is not None and ref.digest == pushed[img.service]["digest"]
            rec = man.service(img.service)["promotions"]["prod"]
            assert rec["digest"] == pushed[img.service]["digest"] and rec["method"] == via
        # Nothing built, pulled or tagged in the engine.
        assert [t for i in engine.images.list() for t in i.tags if ours in t] == []
        assert _our_image_events(engine, t0, t1, ours) == []
        assert _our_image_events(engine, t0, t1, run_id) == []

        again = run_promote("staging", "prod", None, config=cfg, manifest=man, via=via, log=lambda s: None)
        assert {r["status"] for r in again.values()} == {"unchanged"}
