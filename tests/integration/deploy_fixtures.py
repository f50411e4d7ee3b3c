"""Fixtures of the deploy tests (registered with pytest_plugins); the helpers live in deploy_support.py."""

from tests.integration.deploy_support import deploy_registry, port_range, pushed_images

__all__ = ["deploy_registry", "port_range", "pushed_images"]
