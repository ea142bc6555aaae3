"""Multi-host sweeps, as far as one machine can test them: one shared Optuna RDB storage, one
`mlflow server`, and two `workbench sweep` processes (a coordinator and a `--worker`) on 127.0.0.1.

Each test runs on an Optuna SQLite RDB file (always) and on PostgreSQL (skipped, saying why,
where no server starts). PostgreSQL comes from the `pgserver` wheel's binaries (a dev dependency),
else `initdb`/`pg_ctl` on PATH; as root it runs as `nobody`, since PostgreSQL refuses root. The
`mlflow server` keeps its runs in that PostgreSQL (else a SQLite file) and serves the artifacts.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_sweeps import tiny_sets, trial_errors, write_spec

from workbench import study_attrs
from workbench.study_attrs import RUN_ATTR
from workbench.sweeps import optuna_internals
from workbench.sweeps import study as sweep_study

# `make test` runs the suite on several workers (pytest-xdist): this file's postgres server starts once, on one of them
pytestmark = pytest.mark.xdist_group("postgres")

BACKENDS = ["sqlite", "postgresql"]
SERVER_START_S = 120  # mlflow server runs its schema migrations before it answers /health
SWEEP_S = 240


# ------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group (the process and everything it started), SIGKILL after `grace_s`."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, user `postgres`)."""

    route: str  # where the binaries came from: pgserver | PATH
    bin_dir: Path
    root: Path  # data, socket and log; removed on stop
    port: int
    run_as: dict  # subprocess user/group (PostgreSQL refuses to run as root)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.url(name)

    def pg(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / tool), *args], cwd=self.root, capture_output=True, text=True, timeout=60, **self.run_as
        )

    def start(self) -> None:
        data = str(self.root / "data")
        init = self.pg("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=200"
        started = self.pg("pg_ctl", "-D", data, "-l", str(self.root / "server.log"), "-w", "-o", options, "start")
        if started.returncode:
            log = self.root / "server.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} {tail}")

    def stop(self) -> None:
        self.pg("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_routes() -> list[tuple[str, Path]]:
    """Directories with initdb + pg_ctl: the `pgserver` wheel's (found without importing it), then PATH."""
    routes = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        routes.append(("pgserver", Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"))
    if shutil.which("pg_ctl") and shutil.which("initdb"):
        routes.append(("PATH", Path(shutil.which("pg_ctl")).resolve().parent))
    return [(route, path) for route, path in routes if (path / "initdb").is_file() and (path / "pg_ctl").is_file()]


def unprivileged() -> dict:
    """As root, run PostgreSQL as `nobody`; otherwise as ourselves."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def start_postgres() -> tuple[Postgres | None, str]:
    """The first route that starts, or None and why none did."""
    if importlib.util.find_spec("psycopg2") is None:
        return None, "psycopg2 is not installed (pip install psycopg2-binary)"
    routes = postgres_routes()
    if not routes:
        return None, "no PostgreSQL binaries (pip install pgserver, or initdb/pg_ctl on PATH)"
    try:
        run_as = unprivileged()
    except KeyError:
        return None, "running as root and there is no `nobody` user to run PostgreSQL as"
    errors = []
    for route, bin_dir in routes:
        root = Path(tempfile.mkdtemp(prefix="workbench-pg-"))  # not under pytest's tmp: `nobody` must reach it
        if run_as:
            os.chown(root, run_as["user"], run_as["group"])
            if route == "pgserver" and not _runs_as(bin_dir / "postgres", run_as):  # e.g. a venv under /root
                bin_dir = _copy_pgserver(bin_dir, root)
        server = Postgres(route, bin_dir, root, free_port(), run_as)
        try:
            server.start()
            return server, route
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            errors.append(f"{route}: {err}")
            server.stop()
    return None, "; ".join(errors)


def _copy_pgserver(bin_dir: Path, root: Path) -> Path:
    """Copy the wheel's binaries where `nobody` can run them, with the libraries beside the
    package that their RPATH ($ORIGIN/../../../pgserver.libs) names."""
    package = bin_dir.parent.parent
    shutil.copytree(package / "pginstall", root / package.name / "pginstall", symlinks=True)
    libs = package.with_name(f"{package.name}.libs")
    if libs.is_dir():
        shutil.copytree(libs, root / libs.name, symlinks=True)
    return root / package.name / "pginstall" / "bin"


def _runs_as(binary: Path, run_as: dict) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=30, **run_as).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server for the module, or None (the postgresql tests skip, saying why)."""
    server, how = start_postgres()
    yield server, how
    if server is not None:
        server.stop()


@pytest.fixture(scope="module", autouse=True)
def mlflow_process(postgres, tmp_path_factory):
    """`mlflow server` on 127.0.0.1: database backend (the PostgreSQL, else SQLite), served artifacts.
    Started with the module, so its slow start overlaps the queue tests."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server, _ = postgres
    backend = server.create_database("mlflow") if server else f"sqlite:///{root / 'mlflow.db'}"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = root / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process, MlflowServer(f"http://127.0.0.1:{port}", root / "artifacts"), log
    finally:
        stop_group(process, grace_s=1)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path  # --artifacts-destination: <experiment id>/<run id>/artifacts/...


@pytest.fixture
def mlflow_server(mlflow_process) -> MlflowServer:
    """The server, once it answers /health."""
    process, server, log = mlflow_process
    deadline = time.monotonic() + SERVER_START_S
    while True:
        assert process.poll() is None, f"mlflow server exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"mlflow server not up in {SERVER_START_S} s: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)


@pytest.fixture(params=BACKENDS)
def storage_url(request, postgres, tmp_path):
    """The shared Optuna storage URL; the PostgreSQL one gets a fresh database per test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    server, why = postgres
    if server is None:
        pytest.skip(f"no PostgreSQL server: {why}")
    return server.create_database(f"optuna_{uuid.uuid4().hex[:12]}")


# ------------------------------------------------------------------ tests
def test_two_hosts_open_a_fresh_storage_together_and_pop_each_queued_trial_once(storage_url):
    """Two storages (own engines and connections, as on two hosts) open an empty database at the
    same moment (both create the tables: PostgreSQL failed one of them), then race to pop 60 queued
    trials: each is popped exactly once (SQLite without serialised transactions popped some twice)."""
    opened, queued = threading.Barrier(2, timeout=60), threading.Barrier(2, timeout=60)
    popped: list[int] = []
    errors: list[BaseException] = []

    def host(coordinator: bool) -> None:
        try:
            opened.wait()
            storage = _storage(storage_url)
            if coordinator:
                study = optuna.create_study(study_name="race", storage=storage)
                for number in range(60):
                    study.enqueue_trial({"x": number})
            queued.wait()
            mine = optuna.load_study(study_name="race", storage=storage)
            while (trial := optuna_internals.take_queued(mine)) is not None:
                popped.append(trial.number)
        except BaseException as err:  # reported below; the other host's barrier breaks instead of hanging
            errors.append(err)
            opened.abort()
            queued.abort()

    hosts = [threading.Thread(target=host, args=(coordinator,)) for coordinator in (True, False)]
    for thread in hosts:
        thread.start()
    for thread in hosts:
        thread.join()
    assert not errors, errors
    assert sorted(popped) == list(range(60))  # none twice, none lost
    study = optuna.load_study(study_name="race", storage=_storage(storage_url))
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 60


def _storage(url: str):
    return sweep_study.open_optuna(url, heartbeat_s=30, retries=0)


def test_coordinator_and_worker_run_every_trial_exactly_once(storage_url, mlflow_server, shapes_tiny, tmp_path):
    """`workbench sweep NAME --storage URL` and `... --worker` share one study and one MLflow server:
    2 variants x 2 seeds, each COMPLETE once in Optuna and FINISHED once in MLflow, run by both."""
    experiment = f"multihost-{tmp_path.name}"
    out = tmp_path / "out"
    spec = write_spec(tmp_path)
    sets = tiny_sets(shapes_tiny, out, experiment, steps=4)
    command = [
        sys.executable,
        "-m",
        "workbench",
        "sweep",
        str(spec),
        "--storage",
        storage_url,
        "--slots",
        "1",
        "--heartbeat",
        "3",
        "--no-progress",
    ] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    # the worker first: it waits for the coordinator's study, parent run and queue. Each "host"
    # gets its own core where there are two (its slot then trains with 1 thread, as on a 1-core host).
    cores = sorted(os.sched_getaffinity(0))
    worker = _start(command + ["--worker"], tmp_path / "worker.log", env, tmp_path, cores[0])
    coordinator = _start(command, tmp_path / "coordinator.log", env, tmp_path, cores[-1])
    try:
        for name, process in (("coordinator", coordinator), ("worker", worker)):
            try:
                process.wait(SWEEP_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {name} did not finish in {SWEEP_S} s:\n{_tail(tmp_path / f'{name}.log')}")
            assert process.returncode == 0, f"{name} exited {process.returncode}:\n{_tail(tmp_path / f'{name}.log')}"
    finally:
        stop_group(coordinator)
        stop_group(worker)

    study = optuna.load_study(study_name="tiny", storage=_storage(storage_url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4, trial_errors(study)
    keys = sorted((t.params["variant"], t.user_attrs["seed"]) for t in study.trials)
    assert keys == [("mlsc", 0), ("mlsc", 1), ("mvsc", 0), ("mvsc", 1)]
    ran_by = {t.number: t.user_attrs[study_attrs.WORKER_ATTR]["pid"] for t in study.trials}
    assert set(ran_by.values()) == {coordinator.pid, worker.pid}, ran_by  # both hosts did work

    client = MlflowClient(mlflow_server.url)
    parent_id = study.user_attrs[study_attrs.PARENT_ATTR]
    assert study.user_attrs[study_attrs.TRACKING_ATTR] == mlflow_server.url
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["workbench.sweep"] == "tiny"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted((r.data.tags["workbench.variant"], int(r.data.tags["workbench.seed"])) for r in children) == keys
    assert [r.info.status for r in children] == ["FINISHED"] * 4
    by_trial = {int(r.data.tags["workbench.trial"]): r.info.run_id for r in children}
    assert by_trial == {t.number: t.user_attrs[RUN_ATTR] for t in study.trials}
    for run in children:  # artifacts went through the server to its artifact root
        assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
        stored = mlflow_server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts"
        assert (stored / "config.yaml").is_file()


def _start(command: list[str], log: Path, env: dict, cwd: Path, core: int) -> subprocess.Popen:
    """A sweep process on one core (set before it is past its imports, so its trials inherit it)."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    os.sched_setaffinity(process.pid, {core})
    return process


def _tail(log: Path) -> str:
    return log.read_text()[-3000:] if log.exists() else "(no log)"
