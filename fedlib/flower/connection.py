"""How fedlib's ``flwr`` calls reach a SuperLink: a private ``FLWR_HOME`` whose config.toml names
it as the connection ``fedlib``, the environment of Flower's processes (this Python's Flower,
offline), and Flower's CLI output made one line. The coordinator's ``flwr run`` (engine.submit)
uses it, and so does fedlib.deploy.local for the processes it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONNECTION = "fedlib"  # the SuperLink connection's name in FLWR_HOME/config.toml


def flower_env(home: Path) -> dict[str, str]:
    """The environment of Flower's processes: this Python's Flower, a private home, offline."""
    env = dict(os.environ)
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    # Flower starts flower-superexec / flwr-serverapp / flwr-clientapp by name: use this Python's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def write_connection(home: Path, address: str, root_certificates: str | None = None) -> None:
    """FLWR_HOME/config.toml naming the SuperLink that `flwr run ... fedlib` talks to."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{Path(root_certificates).resolve()}"' if root_certificates else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{address}"\n{security}\n'
    )


BOX = str.maketrans("", "", "╭╮╰╯│─┌┐└┘├┤┬┴┼━┃")  # what Flower's CLI draws its panels with


def plain(text: str) -> str:
    """Flower's CLI output in one line: its panels' box-drawing characters and extra spaces gone."""
    return " ".join(text.translate(BOX).split())
