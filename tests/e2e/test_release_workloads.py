"""Real workloads across releases (issue 30): what the services store survives releases and rollbacks, both
versions serve during a rolling update over a migrated schema, and a wrong DB password is caught by readiness.
One release history in a namespace of its own, from a fresh clone, on the real engine, registry and the
pipeline's own cluster; the data is written and read through the services' own APIs (port-forwards on loopback).

1. R1: the clone as it is (schema 1). Tracks are written (PUT with a JWT minted with the Secret's JWT_SECRET,
   as smoke_checks.bearer_token does) and a blob is PUT to the stream server's volume.
2. R2: a commit adds migration 0002 (expand only: a nullable `tracks.genre`) and code that reads and writes it,
   and changes the stream server. During R2's rolling update, bounded PUT/GET traffic goes to every serving
   backend pod through its own port-forward (tests/e2e/rollout_traffic.py says why not one to the Service):
   the old pod (schema-1 code, after the migration ran) and the new pod both answer, with no 5xx and no
   unanswered request except those sent to a pod after its drain delay (the chart's shutdownDelaySeconds)
   from when its deletion began. After R2: R1's tracks read back,
   the blob reads back (the stream pod was recreated on the same volume).
3. `invoke rollback` to R1's revision: schema-1 code against schema 2; it reads R1's and R2's tracks, writes and
   reads a new one; the blob reads back.
4. R3: the operator puts a wrong DB password in the environment's Secret, in an environment that migrates at
   the backend's start (no migrate stage, whose Job would refuse first): R2's backend pod is not Ready because
   PostgreSQL refuses it; the release exits 5, rolled back, its output and report name "postgres: password
   authentication failed"; the stable pod answers every request throughout; the release still serves R1's
   tracks.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.stages.functional_checks import bearer_token
from pipeline.tools import kubectl as kc
from pipeline.tools.kubectl import KubeTarget
from tests.e2e.release_support import (
    clone_repo,
    commit,
    flat,
    invoke,
    kubectl,
    latest_report,
    local_env_in_namespace,
    manifest,
    namespace_of_its_own,
)
from tests.e2e.rollout_traffic import PodTraffic

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.cluster, pytest.mark.slow]

NS = "veza-e2e-workloads"
BACKEND, STREAM = "veza-backend-api", "veza-stream-server"
PORTS = "21200-21299"   # this file's own port-forwards (the releases' use release_support.PORT_FORWARDS)
WRONG = "not-the-db-password-e2e"
# the chart's backend pods (the migrator Job's pods share the name label, not the instance one)
PODS = f"app.kubernetes.io/name={BACKEND},app.kubernetes.io/instance=veza"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, local_cluster: Path, machine_registry: str) -> Iterator[Path]:
    dest = clone_repo(tmp_path_factory.mktemp("workloads"))
    local_env_in_namespace(dest, NS)
    with namespace_of_its_own(local_cluster, machine_registry, NS, PORTS):
        yield dest


def _kt(kubeconfig: Path) -> KubeTarget:
    return KubeTarget(kubeconfig, "", NS)


def _release(clone: Path) -> tuple[int, str]:
    res = invoke(clone, "release", "--env", "local", timeout=900)
    return res.returncode, res.stdout + res.stderr


def _http(kubeconfig: Path, service: str, port: int, method: str, path: str, body: bytes | None = None,
          token: str = "") -> tuple[int, str]:
    """One request to svc/<service> through a port-forward (the Service's port: 80)."""
    with kc.port_forward(_kt(kubeconfig), f"svc/{service}", port) as local:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None and service == BACKEND:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"http://127.0.0.1:{local}{path}", data=body, method=method, headers=headers)
        for attempt in range(5):   # a port-forward's first connection can race the tunnel
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return int(resp.status), resp.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                return int(exc.code), exc.read().decode(errors="replace")
            except OSError:
                if attempt == 4:
                    raise
                time.sleep(1)
    raise AssertionError("unreachable")


def _token(kubeconfig: Path) -> str:
    secret = json.loads(kubectl(kubeconfig, "-n", NS, "get", "secret", "veza-secrets", "-o", "json"))
    return bearer_token(base64.b64decode(secret["data"]["jwt-secret"]).decode(), "e2e-workloads", ttl_s=1800)


def _put_track(kubeconfig: Path, token: str, tid: str, title: str) -> dict[str, object]:
    status, body = _http(kubeconfig, BACKEND, 80, "PUT", f"/api/v1/tracks/{tid}",
                         json.dumps({"title": title, "genre": "e2e"}).encode(), token)
    assert status == 200, (status, body)
    return json.loads(body)  # type: ignore[no-any-return]


def _get_track(kubeconfig: Path, tid: str) -> dict[str, object]:
    status, body = _http(kubeconfig, BACKEND, 80, "GET", f"/api/v1/tracks/{tid}")
    assert status == 200, (tid, status, body)
    return json.loads(body)  # type: ignore[no-any-return]


def _blob(kubeconfig: Path) -> bytes:
    with kc.port_forward(_kt(kubeconfig), f"svc/{STREAM}", 80) as local:
        for attempt in range(5):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/streams/e2e-blob", timeout=5) as resp:
                    return resp.read()  # type: ignore[no-any-return]
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"GET /streams/e2e-blob answered {exc.code}: {exc.read()!r}") from exc
            except OSError:
                if attempt == 4:
                    raise
                time.sleep(1)
    raise AssertionError("unreachable")


def _image(kubeconfig: Path, service: str) -> str:
    dep = json.loads(kubectl(kubeconfig, "-n", NS, "get", "deployment", service, "-o", "json"))
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def _add_genre(clone: Path) -> None:
    """Migration 0002 (expand only: a nullable column) and code that writes and reads it."""
    api = clone / "services/backend-api"
    (api / "migrations/0002_add_tracks_genre.sql").write_text(
        "-- expand only: old code neither reads nor writes it, a NULL is what it leaves\n"
        "ALTER TABLE tracks ADD COLUMN genre text;\n")
    (api / "schema-uses.txt").write_text((api / "schema-uses.txt").read_text() + "tracks.genre\n")
    store = api / "store.go"
    _edit(store, "\tTitle     string    `json:\"title\"`\n", "\tTitle     string    `json:\"title\"`\n"
          "\tGenre     string    `json:\"genre\"`\n")
    _edit(store, "PutTrack(ctx context.Context, id, title, by string)",
          "PutTrack(ctx context.Context, id, title, genre, by string)")
    _edit(store, """`INSERT INTO tracks (id, title, created_by) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, updated_at = now()
		RETURNING id, title, created_by, created_at, updated_at`, id, title, by).
		Scan(&t.ID, &t.Title, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)""",
          """`INSERT INTO tracks (id, title, genre, created_by) VALUES ($1, $2, NULLIF($3, ''), $4)
		ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, genre = COALESCE(EXCLUDED.genre, tracks.genre),
		updated_at = now()
		RETURNING id, title, COALESCE(genre, ''), created_by, created_at, updated_at`, id, title, genre, by).
		Scan(&t.ID, &t.Title, &t.Genre, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)""")
    _edit(store, """`SELECT id, title, created_by, created_at, updated_at FROM tracks WHERE id = $1`,
		id).Scan(&t.ID, &t.Title, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)""",
          """`SELECT id, title, COALESCE(genre, ''), created_by, created_at, updated_at FROM tracks WHERE id = $1`,
		id).Scan(&t.ID, &t.Title, &t.Genre, &t.CreatedBy, &t.CreatedAt, &t.UpdatedAt)""")
    main = api / "main.go"
    _edit(main, "\t\t\tTitle string `json:\"title\"`\n",
          "\t\t\tTitle string `json:\"title\"`\n\t\t\tGenre string `json:\"genre\"`\n")
    _edit(main, "a.store.PutTrack(ctx, id, in.Title, subject)",
          "a.store.PutTrack(ctx, id, in.Title, in.Genre, subject)")
    # a new stream-server version too, so its pod is replaced on the same volume
    _edit(clone / "services/stream-server/main.go", '"store failed"', '"storing the upload failed"')


def _schema_applied_at(kubeconfig: Path, version: int) -> float:
    """When migration `version` was applied (epoch seconds, PostgreSQL's clock: the same machine's)."""
    out = kubectl(kubeconfig, "-n", NS, "exec", "deploy/postgres", "--", "sh", "-c",
                  'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U veza -d veza -Atc '
                  f'"SELECT extract(epoch FROM applied_at) FROM schema_migrations WHERE version = {version}"')
    return float(out.strip())


def test_data_and_traffic_survive_releases_and_a_wrong_password_is_rolled_back(
        clone: Path, local_cluster: Path) -> None:
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    # -- R1: schema 1; tracks and a blob written through the APIs
    rc, out = _release(clone)
    assert rc == 0, out[-8000:]
    timings["R1"] = time.monotonic() - t0
    token = _token(local_cluster)
    before = {tid: _put_track(local_cluster, token, tid, f"written at schema 1: {tid}")["title"]
              for tid in ("r1-a", "r1-b")}
    blob = b"stream bytes \x00\x01\x02 " + NS.encode() * 100
    with kc.port_forward(_kt(local_cluster), f"svc/{STREAM}", 80) as local:
        req = urllib.request.Request(f"http://127.0.0.1:{local}/streams/e2e-blob", data=blob, method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
    assert _blob(local_cluster) == blob
    old_backend, old_stream = _image(local_cluster, BACKEND), _image(local_cluster, STREAM)
    r1_revision = manifest(clone, "local")["services"][BACKEND]["deploy"]["revision"]

    # -- R2: an expand-only migration with code that uses it, traffic to both versions through the rollout
    _add_genre(clone)
    commit(clone, "feat: tracks have a genre (expand: a nullable column)")
    t1 = time.monotonic()
    # The pods drain for the chart's shutdownDelaySeconds: a request within it after a deletion began is answered.
    drain = float(yaml.safe_load((clone / "helm/veza/values.yaml").read_text())["global"]["shutdownDelaySeconds"])
    assert drain > 0
    with PodTraffic(_kt(local_cluster), PODS, 8080, token, "roll", drain_s=drain) as traffic:
        rc, out = _release(clone)
        time.sleep(3)   # the new pod serves a few requests more on its own
    timings["R2"] = time.monotonic() - t1
    assert rc == 0, out[-8000:]
    assert manifest(clone, "local")["services"][BACKEND]["migrate"]["schema_version"] == 2
    new_backend = _image(local_cluster, BACKEND)
    assert new_backend != old_backend and _image(local_cluster, STREAM) != old_stream
    seen = traffic.summary()
    print("rollout traffic:", json.dumps(seen, default=str)[:3000])
    assert not traffic.unexplained(), seen
    assert not any(traffic.restarts.values()), seen   # no container restart hides behind a reconnect
    migrated_at = _schema_applied_at(local_cluster, 2)
    old_after = [a for a in traffic.answers if a.image == old_backend and a.sent > migrated_at and a.status == 200]
    new_ok = [a for a in traffic.answers if a.image == new_backend and a.status == 200]
    assert {a.method for a in old_after} == {"PUT", "GET"}, ("the old version served no reads and writes on "
                                                             "schema 2", seen)
    assert {a.method for a in new_ok} == {"PUT", "GET"}, ("the new version served no reads and writes", seen)
    # what the old pods wrote during the rollout the new code reads, with no genre; the new pods' with theirs
    for tid in traffic.written[:3] + traffic.written[-3:]:
        got = _get_track(local_cluster, tid)
        assert got["title"] == f"rollout {tid}", got
    new_written = next(a.path for a in new_ok if a.method == "PUT").rsplit("/", 1)[1]
    assert _get_track(local_cluster, new_written)["genre"] == "rollout"
    for tid, title in before.items():
        got = _get_track(local_cluster, tid)
        assert (got["title"], got["genre"]) == (title, ""), got   # written by schema-1 code: no genre
    assert _blob(local_cluster) == blob

    # -- rollback to R1's revision: schema-1 code against schema 2 still reads and writes
    t2 = time.monotonic()
    rb = invoke(clone, "rollback", "--env", "local", "--to", str(r1_revision), timeout=600)
    timings["rollback"] = time.monotonic() - t2
    assert rb.returncode == 0, rb.stdout[-6000:] + rb.stderr[-2000:]
    assert _image(local_cluster, BACKEND) == old_backend and _image(local_cluster, STREAM) == old_stream
    for tid, title in before.items():
        got = _get_track(local_cluster, tid)
        assert got["title"] == title and "genre" not in got, got   # the old code's shape
    assert _get_track(local_cluster, new_written)["title"] == f"rollout {new_written}"
    _put_track(local_cluster, token, "after-rollback", "written by schema-1 code on schema 2")
    assert _get_track(local_cluster, "after-rollback")["title"] == "written by schema-1 code on schema 2"
    assert _blob(local_cluster) == blob

    # -- R3: the operator pastes a wrong DB password into the environment's Secret (PostgreSQL keeps the one it
    # was created with). This environment migrates at the backend's start (MIGRATE_ON_START), not in a stage, so
    # the new pods' readiness is the first to use it. (With the migrate stage, its Job, on the same Secret key,
    # stops the release before any pod changes: tests/e2e/test_release_migrate.py covers that stage.)
    kubectl(local_cluster, "-n", NS, "patch", "secret", "veza-secrets", "--type", "merge",
            "-p", json.dumps({"stringData": {"db-password": WRONG}}))
    toml = clone / "pipeline.toml"
    _edit(toml, 'stages = ["build", "push", "sign", "verify-images", "migrate", "deploy"]',
          'stages = ["build", "push", "sign", "verify-images", "deploy"]')
    commit(clone, "chore: this environment migrates at the backend's start")
    stable = [p["metadata"]["name"] for p in json.loads(kubectl(local_cluster, "-n", NS, "get", "pods", "-l", PODS,
                                                                "-o", "json"))["items"]
              if not p["metadata"].get("deletionTimestamp")]
    t3 = time.monotonic()
    with PodTraffic(_kt(local_cluster), PODS, 8080, token, "wrong") as during:
        rc, out = _release(clone)
    timings["R3"] = time.monotonic() - t3
    text = flat(out)
    assert rc == 5, text[-6000:]
    assert "rolled back" in text, text[-4000:]
    assert "credentials-rejected" in text and "postgres: password authentication failed" in text, text[-4000:]
    assert WRONG not in out
    report = json.dumps(latest_report(clone, "local"))
    assert "postgres: password authentication failed" in report, report[-3000:]
    # the stable pod answered throughout; the pod with the wrong password never got traffic (never Ready)
    print("during the failed deploy:", json.dumps(during.summary(), default=str)[:2000])
    assert {a.pod for a in during.answers} == set(stable) and stable, during.summary()
    assert during.answers and all(a.status == 200 for a in during.answers), during.summary()
    assert not any(during.restarts.values()), during.summary()
    assert _image(local_cluster, BACKEND) == old_backend
    assert _get_track(local_cluster, "r1-a")["title"] == before["r1-a"]
    print(f"workloads e2e: {time.monotonic() - t0:.0f}s", {k: round(v) for k, v in timings.items()})
