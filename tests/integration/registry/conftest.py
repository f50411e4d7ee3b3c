"""Fixtures of the registry/push/promote tests (defined in tests/integration/registry_fixtures.py)."""

from tests.integration.registry_fixtures import engine, image_factory, registry  # noqa: F401
