"""One mapping of a tool's classified registry failure to the pipeline's errors (engine push and skopeo)."""

from __future__ import annotations

import pytest

from pipeline.core.errors import RegistryAuthError
from pipeline.tools import docker_push
from pipeline.tools.registry_api import RegistryRequestError, RegistryUnavailable, raise_failure


@pytest.mark.parametrize(("kind", "cls"), [("auth", RegistryAuthError), ("transient", RegistryUnavailable),
                                           ("permanent", RegistryRequestError)])
def test_each_kind_is_its_error(kind: str, cls: type[Exception]) -> None:
    with pytest.raises(cls) as info:
        raise_failure(kind, "skopeo copy a → b", "boom", auth_hint="log in", fix="rerun")
    assert "skopeo copy a → b" in str(info.value)


def test_the_engine_push_classifies_by_the_registry_code() -> None:
    with pytest.raises(RegistryUnavailable):
        docker_push.raise_classified("toomanyrequests: slow down", "r/x:1")
    with pytest.raises(RegistryAuthError, match="push of r/x:1 refused"):
        docker_push.raise_classified("denied: requested access to the resource is denied", "r/x:1")
