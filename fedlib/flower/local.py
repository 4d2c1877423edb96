"""Moved to fedlib.deploy.local. Kept only while fedlib/flower/engine.py, fedlib/flower/__init__.py
and tests/test_flower_config.py import these names from here; delete it once they do not."""

from ..deploy.local import CONNECTION, LocalFederation, flower_env, plain, write_connection

__all__ = ["CONNECTION", "LocalFederation", "flower_env", "plain", "write_connection"]
