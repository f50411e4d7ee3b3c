"""The four service images on the real engine, with their real dependencies from the `invoke bases` images.

Each test starts containers on its own network, probes them from the host through their bridge IP,
and removes everything it created (sandbox fixture).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import docker.errors
import pytest

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


def test_backend_api_ready_only_when_postgres_and_redis_answer(sandbox: Sandbox,
                                                               service_images: ServiceImages) -> None:
    pg, redis = sandbox.infra("postgres"), sandbox.infra("redis")
    wait_healthy(pg)
    wait_healthy(redis)
    api = sandbox.start(service_images.refs["veza-backend-api"], "backend-api",
                        env={"DB_HOST": "postgres", "REDIS_HOST": "redis"})
    ip = sandbox.ip(api)
    wait_http(ip, 8080)
    _check_common(ip, 8080, "veza-backend-api")
    r = http_call(ip, 8080, "/ready")
    assert r.status == 200 and r.json() == {"ready": True, "checks": {"postgres": "ok", "redis": "ok"}}

    # The API endpoint really uses Redis.
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays", "POST").json() == {"track": "t-42", "plays": 1}
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays", "POST").json() == {"track": "t-42", "plays": 2}
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays").json() == {"track": "t-42", "plays": 2}
    assert http_call(ip, 8080, "/api/v1/tracks/bad.id/plays").status == 404
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays", "DELETE").status == 405

    m = http_call(ip, 8080, "/metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = m.body.decode()
    assert _metric(text, 'http_requests_total{method="POST",route="/api/v1/tracks/",code="200"}') == 2
    assert _metric(text, 'http_request_duration_seconds_count{route="/api/v1/tracks/"}') == 5
    assert _metric(text, 'http_request_duration_seconds_bucket{route="/api/v1/tracks/",le="+Inf"}') == 5
    assert "# TYPE http_request_duration_seconds histogram" in text
    assert api.exec_run(["/app/veza-backend-api", "-healthcheck"]).exit_code == 0

    # Redis down: not ready, and the API says so; PostgreSQL still answers.
    redis.stop(timeout=5)
    r = http_call(ip, 8080, "/ready")
    assert r.status == 503 and r.json()["ready"] is False
    assert r.json()["checks"]["postgres"] == "ok" and r.json()["checks"]["redis"] != "ok"
    assert http_call(ip, 8080, "/api/v1/tracks/t-42/plays", "POST").status == 503
    pg.stop(timeout=5)
    r = http_call(ip, 8080, "/ready")
    assert r.status == 503 and r.json()["checks"]["postgres"] != "ok"
    assert http_call(ip, 8080, "/health").status == 200        # alive, just not ready

    logs = _json_logs(api)
    assert {"ts", "level", "msg"} <= set(logs[0])
    _check_sigterm(api)


def test_backend_api_checks_protocols_not_just_tcp(sandbox: Sandbox, service_images: ServiceImages) -> None:
    """A port that accepts TCP but speaks another protocol is not a database: the checks must say no."""
    nats = sandbox.infra("nats")
    wait_healthy(nats)
    # NATS greets with INFO: PostgreSQL's SSLRequest answer must be 'S'/'N', Redis's PING must get PONG.
    api = sandbox.start(service_images.refs["veza-backend-api"], "backend-api",
                        env={"DB_HOST": "nats", "DB_PORT": "4222", "REDIS_HOST": "nats", "REDIS_PORT": "4222"})
    ip = sandbox.ip(api)
    wait_http(ip, 8080)
    r = http_call(ip, 8080, "/ready")
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
    r = http_call(ip, 8081, "/ready")
    assert r.status == 200 and r.json() == {"ready": True, "checks": {"nats": "ok"}}

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
    assert http_call(ip, 8081, "/messages", "POST", b"").status == 400
    assert http_call(ip, 8081, "/messages?room=a.b", "POST", b"x").status == 400
    assert http_call(ip, 8081, "/messages", "GET").status == 405

    text_metrics = http_call(ip, 8081, "/metrics").body.decode()
    assert _metric(text_metrics, "veza_chat_messages_published_total") == 2
    assert _metric(text_metrics, 'http_requests_total{method="POST",route="/messages",code="201"}') == 2
    assert _metric(text_metrics, 'http_request_duration_seconds_count{route="/messages"}') == 5
    assert chat.exec_run(["/app/veza-chat-server", "-healthcheck"]).exit_code == 0

    nats.stop(timeout=5)
    r = http_call(ip, 8081, "/ready")
    assert r.status == 503 and r.json()["ready"] is False
    assert http_call(ip, 8081, "/messages", "POST", b"lost").status == 502
    _json_logs(chat)
    _check_sigterm(chat)


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
