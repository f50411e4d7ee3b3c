"""A minimal client for the local apiserver (stdlib HTTPS + bearer token): health, reads and deletes that
cluster-up waits on and cluster-down uses, with no kubectl process per poll."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from pipeline.local.cluster import layout
from pipeline.local.cluster.pki import Pki


class ApiClient:
    def __init__(self, pki: Pki, *, user: str = "admin", server: str = f"https://127.0.0.1:{layout.API_PORT}") -> None:
        self.server = server
        self.token = pki.token(user)
        self.ctx = ssl.create_default_context(cafile=str(pki.ca_crt))

    def _call(self, method: str, path: str, *, timeout: float, body: dict[str, Any] | None = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return 0, str(exc)

    def ready(self, timeout: float = 3) -> bool:
        code, text = self._call("GET", "/readyz", timeout=timeout)
        return code == 200 and text.strip() == "ok"

    def get(self, path: str, timeout: float = 10) -> dict[str, Any] | None:
        code, text = self._call("GET", path, timeout=timeout)
        if code != 200:
            return None
        result: dict[str, Any] = json.loads(text)
        return result

    def create(self, path: str, body: dict[str, Any], timeout: float = 30) -> int:
        """POST an object; returns the HTTP status (201 created, 409 already exists, 0 no answer)."""
        code, _ = self._call("POST", path, timeout=timeout, body=body)
        return code

    def delete(self, path: str, timeout: float = 30) -> int:
        code, _ = self._call("DELETE", path, timeout=timeout,
                             body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        return code

    def version(self) -> str:
        v = self.get("/version")
        return str(v.get("gitVersion", "")) if v else ""
