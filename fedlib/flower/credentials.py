"""Moved to fedlib.deploy.credentials. Kept only while tests/test_flower_config.py imports
these names from here; delete it once it does not."""

from ..deploy.credentials import TLSFiles, make_node_key, make_tls

__all__ = ["TLSFiles", "make_node_key", "make_tls"]
