"""A real one-node SLURM cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd as root.

Everything lives in one temporary folder (config, munge key and socket, state,
spool, logs) and on free ports, so it never touches a system SLURM or munge.
Clients find it through ``SLURM_CONF``. Needs Debian's ``slurm-wlm`` and
``munge`` (``make test`` installs them) and root (SlurmUser=root).

No daemon outlives the pytest that started it, however pytest ends. The daemons
(each in its own session: they daemonize) and the jobs' processes carry
``WORKBENCH_TEST_SLURM=<pytest pid>:<its start time>`` in their environment; the job
steps (slurmstepd, started with an empty environment) work in the cluster's folder.
`stop` (the fixture's teardown, SIGTERM/SIGHUP, atexit) ends every process of the
cluster; `start` first ends the clusters whose pytest is gone (one killed with
SIGKILL), found through REGISTRY. Clusters of other live pytest sessions are left alone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")
INSTALL_HINT = "install them with `apt-get install -y slurm-wlm munge` (make test does)"
MARK = "WORKBENCH_TEST_SLURM"  # in the environment of every process of a test cluster: its pytest's pid:start time
REGISTRY = Path(tempfile.gettempdir()) / "workbench-test-slurm"  # <mark>.root: the folder of a running test cluster


@dataclass
class Cluster:
    root: Path
    conf: Path
    node: str
    cpus: int
    partition: str = PARTITION
    mark: str = ""  # MARK's value in the environment of its processes

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in DAEMONS:
            path = self.root / f"{name}.log"
            if path.is_file():
                parts.append(f"--- {name}.log\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def missing_programs() -> list[str]:
    return [
        p
        for p in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun")
        if not shutil.which(p)
    ]


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 // 2  # half: leave room for the test process itself
    return 1024


def start(root: Path, timeout_s: float = 30.0) -> Cluster:
    """Write the config, start the three daemons and wait until the node is idle."""
    missing = missing_programs()
    if missing:
        raise RuntimeError(f"SLURM tests need {', '.join(missing)} on PATH; {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise RuntimeError("SLURM tests start slurmd/slurmctld with SlurmUser=root: run them as root (CI does)")
    reap_leftovers()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = root / "munge.socket"
    node = socket.gethostname().split(".")[0]  # slurm names a node by its short host name
    cpus = os.cpu_count() or 1
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=workbench-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=10
# (cred_expire: also how long a requeued job waits before it starts again; default 120 s)
CryptoType=crypto/munge
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=300
SlurmdTimeout=300
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    mark = os.environ[MARK] = owner_mark(os.getpid())  # inherited by the daemons and, through sbatch, by the jobs
    REGISTRY.mkdir(exist_ok=True)
    (REGISTRY / f"{mark}.root").write_text(str(root.resolve()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    run = lambda *cmd: subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run(
        "munged",
        f"--socket={munge_socket}",
        f"--key-file={key}",
        f"--pid-file={root / 'munged.pid'}",
        f"--log-file={root / 'munged.log'}",
        f"--seed-file={root / 'munged.seed'}",
        "--force",
    )
    cluster = Cluster(root, conf, node, cpus, mark=mark)
    _stop_on_exit(cluster)
    try:
        run("slurmctld", "-f", str(conf), "-i")  # -i: ignore state from an earlier start
        run("slurmd", "-f", str(conf), "-N", node)
        deadline = time.monotonic() + timeout_s
        while True:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated"):
                return cluster
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the test SLURM node did not come up: {state.stdout}{state.stderr}\n{cluster.log_tail()}"
                )
            time.sleep(0.2)
    except BaseException:
        stop(cluster)
        raise


def stop(cluster: Cluster, timeout_s: float = 15.0) -> None:
    """Cancel every job, then stop slurmd, slurmctld and munged (each by its pid file), then
    whatever else is left of the cluster (its mark, its folder). Once per cluster."""
    if cluster.root in _stopped:
        return
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    subprocess.run(["scancel", "--full", "--quiet", "--partition", cluster.partition], env=env, capture_output=True)
    deadline = time.monotonic() + 45  # KillWait=30: the job steps (slurmstepd) end before slurmd does
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        if queued.returncode != 0 or not queued.stdout.strip():
            break
        time.sleep(0.2)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = cluster.root / f"{name}.pid"
        if not pid_file.is_file():
            continue
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (ValueError, IndexError, ProcessLookupError):
            continue
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    reap(members(cluster.mark, cluster.root))  # job steps and jobs the daemons left
    _stopped.add(cluster.root)  # only now: an interrupted stop is finished at exit
    (REGISTRY / f"{cluster.mark}.root").unlink(missing_ok=True)


_stopped: set[Path] = set()  # roots of the clusters stopped already


# ---------------------------------------------------------------- the mark and reaping
def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot): with the pid it names one process, never a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_mark(pid: int) -> str:
    return f"{pid}:{_start_time(pid)}"


def _mark_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{MARK}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _in_folder(pid: int, root: str) -> bool:
    """The process works in `root` or has a file under it open (a slurmstepd: its log, its job's output)."""
    proc = Path(f"/proc/{pid}")
    try:
        paths = [os.readlink(proc / "cwd")] + [os.readlink(fd) for fd in (proc / "fd").iterdir()]
    except OSError:
        return False
    return any(path == root or path.startswith(root + os.sep) for path in paths)


def members(mark: str, root: Path | str) -> list[int]:
    """Pids of the processes of one test cluster (its mark, or its folder), never this process."""
    root = str(Path(root).resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            pid = int(entry.name)
            if _mark_of(pid) == mark or _in_folder(pid, root):
                found.append(pid)
    return found


def reap(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM each, SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)


def _owner_alive(mark: str) -> bool:
    owner, _, started = mark.partition(":")
    return owner.isdigit() and _start_time(int(owner)) == started


def reap_leftovers() -> list[int]:
    """End the test clusters whose pytest is gone (e.g. killed with SIGKILL); the pids ended."""
    left = []
    for entry in REGISTRY.glob("*.root") if REGISTRY.is_dir() else []:
        mark = entry.name.removesuffix(".root")
        if _owner_alive(mark):
            continue
        pids = members(mark, entry.read_text().strip())
        reap(pids)
        left += pids
        entry.unlink(missing_ok=True)
    return left


def _stop_on_exit(cluster: Cluster) -> None:
    """On SIGTERM/SIGHUP end the cluster's processes at once, then stop pytest as Ctrl-C would
    (its teardown finds the cluster stopped); at interpreter exit, whatever is still left."""

    def end_now() -> None:
        if cluster.root not in _stopped:
            _stopped.add(cluster.root)
            reap(members(cluster.mark, cluster.root))
            (REGISTRY / f"{cluster.mark}.root").unlink(missing_ok=True)

    def on_signal(signum, frame):
        end_now()
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    atexit.register(end_now)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False
