"""One definition of "give a Secret the keys it lacks" (local infra and the deploy's generate_secrets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.local import infra
from pipeline.tools.kubectl import KubeTarget

TARGET = KubeTarget(Path("/nonexistent/kubeconfig"), "", "ns")


def _fake(monkeypatch: pytest.MonkeyPatch, found: dict[str, Any] | None) -> list[dict[str, Any]]:
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(infra.kubectl, "get_json", lambda *a, **k: found)
    monkeypatch.setattr(infra.kubectl, "apply", lambda target, text: applied.append(json.loads(text)))
    return applied


def test_only_the_missing_keys_get_random_values_and_the_others_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    applied = _fake(monkeypatch, {"data": {"A": "b2xk"}})
    assert infra.missing_secret_keys(TARGET, "s", ["A", "B"]) == ["B"]
    assert infra.ensure_secret(TARGET, "s", ["A", "B"]) == ["B"]
    (doc,) = applied
    assert doc["data"] == {"A": "b2xk"} and list(doc["stringData"]) == ["B"] and len(doc["stringData"]["B"]) >= 24


def test_a_complete_secret_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    applied = _fake(monkeypatch, {"data": {"A": "x", "B": "y"}})
    assert infra.ensure_secret(TARGET, "s", ["A", "B"]) == []
    assert applied == []


def test_an_absent_secret_is_created_with_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    applied = _fake(monkeypatch, None)
    assert infra.ensure_secret(TARGET, "s", ["A"]) == ["A"]
    assert applied[0]["metadata"]["name"] == "s" and "data" not in applied[0]
