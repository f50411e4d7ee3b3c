"""The four service images on the real engine, with their real dependencies from the `invoke bases` images.

Each test starts containers on its own network, probes them from the host through their bridge IP,
and removes everything it created (sandbox fixture).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from typing import Any

import docker.errors
import jwt
import pytest

from pipeline.local.infra import REDIS_STDIN_CONFIG
from tests.integration.services_fixtures import (
    BUILD_INFO,
    SIZE_LIMITS_MB,
    Sandbox,
    ServiceImages,
    http_call,
    stop_timed,
    wait_healthy,
    wait_http,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _json_logs(container: Any) -> list[dict[str, Any]]:
    lines = container.logs(stdout=True, stderr=False).decode().splitlines()
    assert lines, "no log lines"
    return [json.loads(ln) for ln in lines]   # every stdout line must be one JSON object


def _check_sigterm(container: Any) -> None:
    elapsed, code = stop_timed(container)
    assert code == 0, f"exit code {code} after SIGTERM (137 would mean it was killed)"
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert any(rec["msg"] == "shutting down" for rec in _json_logs(container))


def _check_common(ip: str, port: int, name: str) -> None:
    h = http_call(ip, port, "/health")
    assert h.status == 200 and h.json()["status"] == "ok"
    v = http_call(ip, port, "/version").json()
    assert v == {"service": name, "version": BUILD_INFO["VERSION"], "revision": BUILD_INFO["REVISION"],
                 "created": BUILD_INFO["CREATED"]}


def _metric(text: str, line_prefix: str) -> float:
    for ln in text.splitlines():
        if ln.startswith(line_prefix + " "):
            return float(ln.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line '{line_prefix}' in:\n{text}")


@pytest.mark.parametrize("name", sorted(SIZE_LIMITS_MB))
def test_image_config_size_user_labels_healthcheck(name: str, service_images: ServiceImages,
                                                   docker_client: Any) -> None:
    ref = service_images.refs[name]
    attrs = docker_client.api.inspect_image(ref)
    cfg = attrs["Config"]
    svc = service_images.config.service(name)
    assert attrs["Size"] <= SIZE_LIMITS_MB[name] * 1_000_000, f"{name}: {attrs['Size'] / 1e6:.1f} MB"
    assert cfg["User"] == "1001:1001"
    assert cfg["Healthcheck"]["Test"] == ["CMD", f"/app/{name}", "-healthcheck"]
    assert f"{svc.port}/tcp" in cfg["ExposedPorts"]
    labels = cfg["Labels"]
    for key, arg in (("version", "VERSION"), ("revision", "REVISION"), ("created", "CREATED"),
                     ("source", "SOURCE")):
        assert labels[f"org.opencontainers.image.{key}"] == BUILD_INFO[arg]
    # No shell in the runtime image.
    c = docker_client.containers.create(ref, entrypoint=["/bin/sh", "-c", "true"],
                                        labels={"veza.pipeline.run": service_images.run})
    try:
        with pytest.raises(docker.errors.APIError, match="no such file"):
            c.start()
    finally:
        c.remove(force=True, v=True)


PG_PASSWORD = "veza-test-pw"     # services_fixtures.Sandbox.infra("postgres")
JWT_SECRET = "j" * 32
REDIS_PASSWORD = "redis-test-pw"


def _token(secret: str = JWT_SECRET, sub: str = "tester") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, secret, algorithm="HS256")


def _auth_call(ip: str, path: str, method: str, body: bytes | None = None, token: str | None = None) -> Any:
    conn = http.client.HTTPConnection(ip, 8080, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _backend_env(**over: str) -> dict[str, str]:
    return {"DB_HOST": "postgres", "DB_PASSWORD": PG_PASSWORD, "REDIS_HOST": "redis",
            "REDIS_PASSWORD": REDIS_PASSWORD, "JWT_SECRET": JWT_SECRET, **over}


def test_backend_api_ready_only_when_postgres_and_redis_answer(sandbox: Sandbox,
                                                               service_images: ServiceImages) -> None:
    pg = sandbox.infra("postgres")
    redis = sandbox.start(_infra_image("redis"), "redis", command=["sh", "-c", REDIS_STDIN_CONFIG],
                          env={"REDIS_PASSWORD": REDIS_PASSWORD, "REDISCLI_AUTH": REDIS_PASSWORD})
    wait_healthy(pg)
    wait_healthy(redis)
    api = sandbox.start(service_images.refs["veza-backend-api"], "backend-api", env=_backend_env())
    ip = sandbox.ip(api)
    wait_http(ip, 8080)
    _check_common(ip, 8080, "veza-backend-api")
    # Ready once the migrations ran (at start, with DB_PASSWORD): PostgreSQL and Redis accept the credentials.
    r = wait_http(ip, 8080, "/ready", until=lambda r: r.status == 200)
    assert r.json() == {"ready": True, "checks": {"postgres": "ok", "redis": "ok"}}

    # Tracks live in PostgreSQL: written with a token signed with JWT_SECRET, read back by anyone.
    assert _auth_call(ip, "/api/v1/tracks/t-42", "PUT", b'{"title":"Blue"}')[0] == 401          # no token
    assert _auth_call(ip, "/api/v1/tracks/t-42", "PUT", b'{"title":"Blue"}', _token("k" * 32))[0] == 401
    status, body = _auth_call(ip, "/api/v1/tracks/t-42", "PUT", b'{"title":"Blue"}', _token())
    assert status == 200 and json.loads(body)["created_by"] == "tester", body
    assert _auth_call(ip, "/api/v1/tracks/t-42", "PUT", b'{"title":"Blue in Green"}', _token())[0] == 200
    assert http_call(ip, 8080, "/api/v1/tracks/t-42").json()["title"] == "Blue in Green"
    assert http_call(ip, 8080, "/api/v1/tracks/none").status == 404
    assert _auth_call(ip, "/api/v1/tracks/t-42", "PUT", b'{"title":""}', _token())[0] == 400
    rows = pg.exec_run(["psql", "-h", "127.0.0.1", "-U", "veza", "-d", "veza", "-tAc",
                        "SELECT title FROM tracks WHERE id = 't-42'; SELECT max(version) FROM schema_migrations"],
                       environment={"PGPASSWORD": PG_PASSWORD})
    assert rows.exit_code == 0 and rows.output.decode().split() == ["Blue", "in", "Green", "1"], rows.output

    # Plays are counted in Redis (authenticated): writes need the token too.
    assert _auth_call(ip, "/api/v1/tracks/t-42/plays", "POST")[0] == 401
    for n in (1, 2):
        status, body = _auth_call(ip, "/api/v1/tracks/t-42/plays", "POST", token=_token())
        assert status == 200 and json.loads(body) == {"track": "t-42", "plays": n}
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays").json() == {"track": "t-42", "plays": 2}
    assert http_call(ip, 8080, "/api/v1/tracks/bad.id/plays").status == 404
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays", "DELETE").status == 405

    m = http_call(ip, 8080, "/metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = m.body.decode()
    assert _metric(text, 'http_requests_total{method="POST",route="/api/v1/tracks/",code="200"}') == 2
    assert _metric(text, 'http_requests_total{method="PUT",route="/api/v1/tracks/",code="200"}') == 2
    assert _metric(text, 'http_request_duration_seconds_count{route="/api/v1/tracks/"}') == 13
    assert _metric(text, 'http_request_duration_seconds_bucket{route="/api/v1/tracks/",le="+Inf"}') == 13
    assert "# TYPE http_request_duration_seconds histogram" in text
    assert api.exec_run(["/app/veza-backend-api", "-healthcheck"]).exit_code == 0

    # Redis down: not ready, and the API says so; PostgreSQL still answers.
    redis.stop(timeout=5)
    r = http_call(ip, 8080, "/ready")
    assert r.status == 503 and r.json()["ready"] is False
    assert r.json()["checks"]["postgres"] == "ok" and r.json()["checks"]["redis"] != "ok"
    assert _auth_call(ip, "/api/v1/tracks/t-42/plays", "POST", token=_token())[0] == 503
    pg.stop(timeout=5)
    r = http_call(ip, 8080, "/ready")
    assert r.status == 503 and r.json()["checks"]["postgres"] != "ok"
    assert http_call(ip, 8080, "/health").status == 200        # alive, just not ready

    logs = _json_logs(api)
    assert {"ts", "level", "msg"} <= set(logs[0])
    _check_sigterm(api)


def _infra_image(name: str) -> str:
    from pipeline.core.config import load_config

    cfg = load_config(check_files=False)
    return cfg.bases[cfg.infra[name].base].local


def test_backend_api_is_not_ready_when_a_password_is_wrong_and_says_which(sandbox: Sandbox,
                                                                         service_images: ServiceImages) -> None:
    """A wrong DB_PASSWORD or REDIS_PASSWORD: not Ready, /ready names the dependency that refused it and why
    (without the password), and the log says the same in one record (what the deploy's fail-fast reads)."""
    pg = sandbox.infra("postgres")
    redis = sandbox.start(_infra_image("redis"), "redis", command=["sh", "-c", REDIS_STDIN_CONFIG],
                          env={"REDIS_PASSWORD": REDIS_PASSWORD, "REDISCLI_AUTH": REDIS_PASSWORD})
    wait_healthy(pg)
    wait_healthy(redis)
    wrong_db = "not-the-db-password"
    api = sandbox.start(service_images.refs["veza-backend-api"], "backend-api", env=_backend_env(DB_PASSWORD=wrong_db))
    ip = sandbox.ip(api)
    wait_http(ip, 8080)
    r = http_call(ip, 8080, "/ready")
    assert r.status == 503, r.body
    body = r.json()
    assert body["rejected"] == ["postgres"] and body["checks"]["redis"] == "ok", body
    assert "28P01" in body["checks"]["postgres"] and "password authentication failed" in body["checks"]["postgres"]
    assert wrong_db.encode() not in r.body and wrong_db.encode() not in api.logs()
    deadline = time.monotonic() + 10   # the engine copies stdout to the log asynchronously
    while not [rec for rec in _json_logs(api) if rec["msg"] == "not ready"]:
        assert time.monotonic() < deadline, _json_logs(api)
        time.sleep(0.3)
    assert [rec for rec in _json_logs(api) if rec["msg"] == "not ready"][-1]["rejected"] == ["postgres"]

    wrong_redis = "not-the-redis-password"
    api2 = sandbox.start(service_images.refs["veza-backend-api"], "backend-api-2",
                         env=_backend_env(REDIS_PASSWORD=wrong_redis))
    ip2 = sandbox.ip(api2)
    wait_http(ip2, 8080)
    r = wait_http(ip2, 8080, "/ready", until=lambda r: r.status == 503 and r.json()["checks"]["postgres"] == "ok")
    assert r.json()["rejected"] == ["redis"] and "WRONGPASS" in r.json()["checks"]["redis"], r.body
    assert wrong_redis.encode() not in r.body and wrong_redis.encode() not in api2.logs()
    # No password where Redis requires one: refused as well (NOAUTH), not a transient failure.
    api3 = sandbox.start(service_images.refs["veza-backend-api"], "backend-api-3", env=_backend_env(REDIS_PASSWORD=""))
    ip3 = sandbox.ip(api3)
    wait_http(ip3, 8080)
    r = wait_http(ip3, 8080, "/ready", until=lambda r: r.status == 503 and r.json()["checks"]["postgres"] == "ok")
    assert r.json()["rejected"] == ["redis"] and "NOAUTH" in r.json()["checks"]["redis"], r.body


def test_backend_api_refuses_to_start_without_a_jwt_secret(sandbox: Sandbox, service_images: ServiceImages) -> None:
    api = sandbox.start(service_images.refs["veza-backend-api"], "backend-api", env=_backend_env(JWT_SECRET="short"))
    assert api.wait(timeout=20)["StatusCode"] == 2
    logs = _json_logs(api)
    assert logs[-1]["msg"] == "bad JWT_SECRET" and "at least 32 bytes" in logs[-1]["error"]
    assert "short" not in logs[-1]["error"]


def test_backend_api_checks_protocols_not_just_tcp(sandbox: Sandbox, service_images: ServiceImages) -> None:
    """A port that accepts TCP but speaks another protocol is not a database: the checks must say no."""
    nats = sandbox.infra("nats")
    wait_healthy(nats)
    # NATS greets with INFO: PostgreSQL's SSLRequest answer must be 'S'/'N', Redis's PING must get PONG.
    api = sandbox.start(service_images.refs["veza-backend-api"], "backend-api",
                        env=_backend_env(DB_HOST="nats", DB_PORT="4222", REDIS_HOST="nats", REDIS_PORT="4222"))
    ip = sandbox.ip(api)
    wait_http(ip, 8080)
    # a fresh container's first checks on a loaded machine may take longer than http_call's default 5 s
    r = http_call(ip, 8080, "/ready", timeout=20)
    assert r.status == 503
    checks = r.json()["checks"]
    assert checks["postgres"] != "ok" and checks["redis"] != "ok", checks


def _nats_subscriber(ip: str, subjects: list[str]) -> socket.socket:
    s = socket.create_connection((ip, 4222), timeout=5)
    f = s.makefile("rb")
    assert f.readline().startswith(b"INFO ")
    cmds = b'CONNECT {"verbose":false}\r\n' + b"".join(
        f"SUB {subj} {i + 1}\r\n".encode() for i, subj in enumerate(subjects)) + b"PING\r\n"
    s.sendall(cmds)
    assert f.readline().strip() == b"PONG"
    return s


def _next_msg(s: socket.socket) -> tuple[str, bytes]:
    f = s.makefile("rb")
    while True:
        line = f.readline()
        assert line, "subscriber connection closed"
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
            continue
        if line.startswith(b"MSG "):
            parts = line.split()
            payload = f.read(int(parts[-1]) + 2)[:-2]
            return parts[1].decode(), payload


def test_chat_server_publishes_to_nats(sandbox: Sandbox, service_images: ServiceImages) -> None:
    nats = sandbox.infra("nats")
    wait_healthy(nats)
    chat = sandbox.start(service_images.refs["veza-chat-server"], "chat-server",
                         env={"NATS_URL": "nats://nats:4222", "NATS_SUBJECT": "veza.test"})
    ip = sandbox.ip(chat)
    wait_http(ip, 8081)
    _check_common(ip, 8081, "veza-chat-server")
    r = wait_http(ip, 8081, "/ready", until=lambda r: r.status == 200)
    assert r.json() == {"ready": True, "checks": {"nats": "ok", "subscription": "ok"}}

    sub = _nats_subscriber(sandbox.ip(nats), ["veza.test", "veza.test.>"])
    try:
        text = 'hello "veza" ✓'
        r = http_call(ip, 8081, "/messages?room=lobby", "POST", text.encode())
        assert r.status == 201
        assert r.json() == {"subject": "veza.test.lobby", "payload": text, "bytes": len(text.encode())}
        assert _next_msg(sub) == ("veza.test.lobby", text.encode())     # really delivered by NATS
        r = http_call(ip, 8081, "/messages", "POST", b"plain")
        assert r.status == 201 and r.json()["subject"] == "veza.test"
        assert _next_msg(sub) == ("veza.test", b"plain")
    finally:
        sub.close()
    # The service's own subscriber received both back from NATS.
    r = wait_http(ip, 8081, "/messages?room=lobby", until=lambda r: r.json().get("messages") == [text])
    assert r.json() == {"subject": "veza.test.lobby", "messages": [text]}
    assert http_call(ip, 8081, "/messages").json() == {"subject": "veza.test", "messages": ["plain"]}
    assert http_call(ip, 8081, "/messages", "POST", b"").status == 400
    assert http_call(ip, 8081, "/messages?room=a.b", "POST", b"x").status == 400
    assert http_call(ip, 8081, "/messages", "DELETE").status == 405

    text_metrics = http_call(ip, 8081, "/metrics").body.decode()
    assert _metric(text_metrics, "veza_chat_messages_published_total") == 2
    assert _metric(text_metrics, "veza_chat_messages_received_total") == 2
    assert _metric(text_metrics, 'http_requests_total{method="POST",route="/messages",code="201"}') == 2
    assert chat.exec_run(["/app/veza-chat-server", "-healthcheck"]).exit_code == 0

    nats.stop(timeout=5)
    r = http_call(ip, 8081, "/ready")
    assert r.status == 503 and r.json()["ready"] is False and "rejected" not in r.json()
    assert http_call(ip, 8081, "/messages", "POST", b"lost").status == 502
    _json_logs(chat)
    _check_sigterm(chat)


def test_chat_server_authenticates_to_nats_and_a_wrong_password_is_named(sandbox: Sandbox,
                                                                        service_images: ServiceImages) -> None:
    nats = sandbox.start(_infra_image("nats"), "nats",
                         command=["--config", "/etc/nats/nats-server.conf", "--user", "veza", "--pass", "nats-pw"])
    wait_healthy(nats)
    good = sandbox.start(service_images.refs["veza-chat-server"], "chat-good",
                         env={"NATS_URL": "nats://veza:nats-pw@nats:4222"})
    ip = sandbox.ip(good)
    wait_http(ip, 8081, "/ready", until=lambda r: r.status == 200)
    assert http_call(ip, 8081, "/messages?room=auth", "POST", b"hi").status == 201
    wait_http(ip, 8081, "/messages?room=auth", until=lambda r: r.json().get("messages") == ["hi"])

    bad = sandbox.start(service_images.refs["veza-chat-server"], "chat-bad",
                        env={"NATS_URL": "nats://veza:wrong-pw@nats:4222"})
    ip = sandbox.ip(bad)
    wait_http(ip, 8081)
    # Both the fresh connection and the subscriber's are refused (the subscriber's once its first attempt ran:
    # "not subscribed yet" before, on a loaded machine)
    r = wait_http(ip, 8081, "/ready", until=lambda r: r.status == 503 and "not subscribed yet" not in
                  str(r.json()["checks"].get("subscription")))
    assert r.status == 503 and r.json()["rejected"] == ["nats", "subscription"], r.body
    assert "Authorization Violation" in r.json()["checks"]["nats"] and b"wrong-pw" not in r.body
    assert http_call(ip, 8081, "/messages", "POST", b"x").status == 502
    # The engine copies the container's stdout to its log asynchronously: allow it a moment.
    deadline = time.monotonic() + 10
    while not any(rec["msg"] == "not ready" and rec["rejected"] == ["nats", "subscription"] for rec in _json_logs(bad)):
        assert time.monotonic() < deadline, _json_logs(bad)
        time.sleep(0.3)


def test_stream_server_stores_in_its_volume(sandbox: Sandbox, service_images: ServiceImages) -> None:
    image = service_images.refs["veza-stream-server"]
    vol = sandbox.volume("streams")
    first = sandbox.start(image, "stream-server", volumes={vol.name: {"bind": "/app/streams", "mode": "rw"}})
    ip = sandbox.ip(first)
    wait_http(ip, 8082)
    _check_common(ip, 8082, "veza-stream-server")
    assert http_call(ip, 8082, "/ready").json() == {"ready": True, "checks": {"volume": "ok"}}

    data = os.urandom(300_000)
    r = http_call(ip, 8082, "/streams/track-1", "PUT", data)
    assert r.status == 201 and r.json() == {"id": "track-1", "bytes": len(data)}
    g = http_call(ip, 8082, "/streams/track-1")
    assert g.status == 200 and g.body == data
    assert http_call(ip, 8082, "/streams/nope").status == 404
    assert http_call(ip, 8082, "/streams/bad.id").status == 400
    assert http_call(ip, 8082, "/streams/x", "DELETE").status == 405
    text = http_call(ip, 8082, "/metrics").body.decode()
    assert _metric(text, 'http_requests_total{method="PUT",route="/streams/",code="201"}') == 1
    _check_sigterm(first)

    # A new container on the same volume serves the same bytes.
    second = sandbox.start(image, "stream-server-2", volumes={vol.name: {"bind": "/app/streams", "mode": "rw"}})
    ip2 = sandbox.ip(second)
    wait_http(ip2, 8082)
    assert http_call(ip2, 8082, "/streams/track-1").body == data

    # A volume UID 1001 cannot write to: alive, not ready, uploads refused.
    ro = sandbox.start(image, "stream-server-ro", tmpfs={"/app/streams": "mode=755"})
    ip3 = sandbox.ip(ro)
    wait_http(ip3, 8082)
    r = http_call(ip3, 8082, "/ready")
    assert r.status == 503 and r.json()["ready"] is False and "not writable" in r.json()["checks"]["volume"]
    assert http_call(ip3, 8082, "/streams/x", "PUT", b"data").status == 500


def test_docs_serves_the_site_and_reports_healthy(sandbox: Sandbox, service_images: ServiceImages) -> None:
    image = service_images.refs["veza-docs"]
    docs = sandbox.start(image, "docs")
    ip = sandbox.ip(docs)
    wait_http(ip, 8083)
    _check_common(ip, 8083, "veza-docs")
    index = http_call(ip, 8083, "/")
    assert index.status == 200 and b"Veza documentation" in index.body
    assert http_call(ip, 8083, "/services.html").status == 200
    assert http_call(ip, 8083, "/missing.html").status == 404
    assert http_call(ip, 8083, "/ready").json() == {"ready": True, "checks": {"index": "ok"}}

    broken = sandbox.start(image, "docs-broken", env={"SITE_DIR": "/nonexistent"})
    ipb = sandbox.ip(broken)
    wait_http(ipb, 8083)
    assert http_call(ipb, 8083, "/ready").status == 503

    # The engine's own HEALTHCHECK (the binary's -healthcheck mode) turns the container healthy.
    t0 = time.monotonic()
    wait_healthy(docs, timeout=30)
    assert time.monotonic() - t0 < 30
    _check_sigterm(docs)


@pytest.mark.parametrize(("name", "port"), [("veza-docs", 8083), ("veza-chat-server", 8081)])
def test_sigterm_drains_for_the_shutdown_delay_then_exits_0(name: str, port: int, sandbox: Sandbox,
                                                            service_images: ServiceImages) -> None:
    # One Go and one Rust image: during SHUTDOWN_DELAY_S /ready is 503 draining and /health still 200.
    c = sandbox.start(service_images.refs[name], "drain", env={"SHUTDOWN_DELAY_S": "2"})
    ip = sandbox.ip(c)
    wait_http(ip, port, "/health")
    t0 = time.monotonic()
    c.kill(signal="SIGTERM")
    time.sleep(0.3)
    ready = http_call(ip, port, "/ready")
    assert ready.status == 503 and ready.json() == {"ready": False, "draining": True}, ready
    assert http_call(ip, port, "/health").status == 200
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
    assert http_call(ip, port, "/health").status == 200, "stopped serving inside the delay"
    code = c.wait(timeout=10)["StatusCode"]
    elapsed = time.monotonic() - t0
    assert code == 0, f"exit code {code} after SIGTERM"
    assert 2 <= elapsed < 8, f"exited {elapsed:.1f}s after SIGTERM with a 2 s delay"
    assert [r["msg"] for r in _json_logs(c) if r["msg"] in ("draining", "stopped")] == ["draining", "stopped"]
