"""`workbench ui`: the MLflow UI on the project's tracking store, local-only by default.

The server runs in its own process group. Its URL is printed only once it answers
HTTP: the runs table of the experiment that ran last (`#/experiments/<id>/runs`), so
the first page is the runs, not an empty experiment list (`--open` opens it); Ctrl-C or
SIGTERM to `workbench ui` is passed on to that whole group (the server and its workers)
and waited for, so no server is left serving the port. A busy port is refused before
anything starts.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser

from workbench import tracking
from workbench.errors import ConfigError, RunError
from workbench.tracking import resolve_uri
from workbench.urls import redacted

LOCAL_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 180.0  # mlflow ui imports a lot and migrates the store on first use
STOP_GRACE_S = 5.0  # after this, the server's group gets SIGKILL


def ui_command(tracking_uri: str = "", host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> list[str]:
    """The `mlflow ui` argument list (run without a shell) for the resolved tracking store."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: {port} is out of range — allowed: 1..65535")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"--host: {host!r} is not a host name or address")
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        resolve_uri(tracking_uri),
        "--host",
        host,
        "--port",
        str(port),
    ]


def ui_url(host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def latest_experiment(tracking_uri: str = "") -> str | None:
    """The id of the experiment whose run started last; else the newest experiment with no runs
    yet besides MLflow's "Default"; None for an empty store."""
    mlflow_client = tracking.client(tracking_uri)
    experiments = mlflow_client.search_experiments(order_by=["creation_time DESC"])
    if not experiments:
        return None
    ids = [e.experiment_id for e in experiments]
    latest = []
    for start in range(0, len(ids), 100):  # search_runs takes a bounded list of experiments
        latest += mlflow_client.search_runs(
            ids[start : start + 100], order_by=["attributes.start_time DESC"], max_results=1
        )
    if latest:
        return max(latest, key=lambda run: run.info.start_time or 0).info.experiment_id
    named = [e for e in experiments if e.name != "Default"]
    return (named or experiments)[0].experiment_id


def runs_url(base: str, experiment: str | None) -> str:
    """The runs table of `experiment` (the server's start page when there is none)."""
    return f"{base}/#/experiments/{experiment}/runs" if experiment else f"{base}/"


def is_local(host: str) -> bool:
    """Only this machine can connect (loopback address or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    if is_local(host):
        return None
    return (
        f"warning: --host {host} serves the MLflow UI (no login) to every machine that can reach "
        f"this one; use --host {LOCAL_HOST} to keep it local"
    )


def check_port_free(host: str, port: int) -> None:
    """A one-line error when something already listens on host:port (or it cannot be bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
                raise RunError(
                    f"--port {port}: {host}:{port} is already in use (another `workbench ui`?); "
                    f"choose another port with --port"
                ) from None
            raise RunError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None


def answers(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (OSError, ValueError):
        return False


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> int:
    """Send `sig` to the server's process group, wait; SIGKILL the group after `grace_s`."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return process.wait()
    finally:
        _reap_group(process.pid)


def _reap_group(pgid: int) -> None:
    """Workers the server left behind in its group (e.g. it died first) get SIGKILL."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def serve(
    tracking_uri: str = "",
    host: str = LOCAL_HOST,
    port: int = DEFAULT_PORT,
    echo=print,
    start_timeout_s: float = START_TIMEOUT_S,
    open_browser: bool = False,
) -> int:
    """Start the UI in the foreground until Ctrl-C/SIGTERM; returns the exit code (0 after a stop).
    Prints the latest experiment's runs URL once it answers; `open_browser` opens it too."""
    command = ui_command(tracking_uri, host, port)
    warning = exposure_warning(host)
    if warning:
        echo(warning)
    check_port_free(host, port)
    url = ui_url(host if host not in ("0.0.0.0", "::") else LOCAL_HOST, port)

    def on_signal(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):  # one stop at a time: a second signal must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    process = None
    try:
        # its own process group, so we stop all of it; its chatter goes to stderr, our stdout stays ours
        process = subprocess.Popen(command, start_new_session=True, stdout=2)
        deadline = time.monotonic() + start_timeout_s
        while not answers(url):
            code = process.poll()
            if code is not None:
                raise RunError(f"mlflow ui exited with code {code} before answering on {url} (see its output above)")
            if time.monotonic() > deadline:
                raise RunError(f"mlflow ui did not answer on {url} within {start_timeout_s:.0f} s")
            time.sleep(0.5)
        time.sleep(0.5)
        if process.poll() is not None:  # something else answered there (it took the port meanwhile)
            raise RunError(f"mlflow ui exited with code {process.returncode}; {url} is served by another process")
        page = runs_url(ui_url(host, port), latest_experiment(tracking_uri))
        echo(f"MLflow UI for {redacted(resolve_uri(tracking_uri))} at {page} (Ctrl-C to stop)")
        if open_browser:
            webbrowser.open(runs_url(url, latest_experiment(tracking_uri)))
        code = process.wait()  # the server ended by itself
        _reap_group(process.pid)
        process = None
        return code
    except _Stop as stop:
        if process is not None:
            stop_group(process, signal.SIGTERM)
            process = None
        echo("MLflow UI stopped")
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
    finally:
        if process is not None:  # an error above: the server must not outlive us
            stop_group(process, signal.SIGTERM)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
