"""`workbench ui`: the MLflow UI on the project's tracking store, local-only by default."""

from __future__ import annotations

import subprocess
import sys

from workbench.config import ConfigError
from workbench.tracking import resolve_uri

LOCAL_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def ui_command(tracking_uri: str = "", host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> list[str]:
    """The `mlflow ui` argument list (run without a shell) for the resolved tracking store."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: {port} is out of range — allowed: 1..65535")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"--host: {host!r} is not a host name or address")
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", resolve_uri(tracking_uri),
        "--host", host,
        "--port", str(port),
    ]


def ui_url(host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(tracking_uri: str = "", host: str = LOCAL_HOST, port: int = DEFAULT_PORT, echo=print) -> int:
    """Start the UI in the foreground (Ctrl-C stops it); returns its exit code."""
    command = ui_command(tracking_uri, host, port)
    echo(f"MLflow UI for {resolve_uri(tracking_uri)} at {ui_url(host, port)} (Ctrl-C to stop)")
    try:
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 0
