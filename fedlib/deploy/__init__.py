"""Operating Flower, apart from the apps: what starts processes and patches Flower.

``local``: a SuperLink and N SuperNodes on loopback (``fedlib flower-local``, the tests);
``credentials``: its CA, server certificate and SuperNode keys; ``warm``: the opt-in warm
SuperNodes, which patch Flower internals pinned to one Flower release. The Flower apps
(fedlib.flower: ClientApp, ServerApp, messages, run config, SecAgg) need none of this, and
nothing in fedlib.flower imports it (tests/test_design.py): a Flower upgrade that breaks operations
breaks here.

Telemetry and update checks are off unless the user turned them on, as in fedlib.flower.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from .local import LocalFederation  # noqa: E402

__all__ = ["LocalFederation"]
