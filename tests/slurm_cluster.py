"""A real one-node SLURM cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd as root.

Everything lives in one temporary folder (config, munge key and socket, state,
spool, logs) and on free ports, so it never touches a system SLURM or munge.
Clients find it through ``SLURM_CONF``. Needs Debian's ``slurm-wlm`` and
``munge`` (``.ci/run`` installs them) and root (SlurmUser=root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")
INSTALL_HINT = "install them with `apt-get install -y slurm-wlm munge` (.ci/run does)"


@dataclass
class Cluster:
    root: Path
    conf: Path
    node: str
    cpus: int
    partition: str = PARTITION

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
    return [p for p in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun") if not shutil.which(p)]


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
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
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
    env = {**os.environ, "SLURM_CONF": str(conf)}
    run = lambda *cmd: subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("munged", f"--socket={munge_socket}", f"--key-file={key}", f"--pid-file={root / 'munged.pid'}",
        f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munged.seed'}", "--force")
    cluster = Cluster(root, conf, node, cpus)
    try:
        run("slurmctld", "-f", str(conf), "-i")  # -i: ignore state from an earlier start
        run("slurmd", "-f", str(conf), "-N", node)
        deadline = time.monotonic() + timeout_s
        while True:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated"):
                return cluster
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test SLURM node did not come up: {state.stdout}{state.stderr}\n{cluster.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        stop(cluster)
        raise


def stop(cluster: Cluster, timeout_s: float = 15.0) -> None:
    """Cancel every job, then stop slurmd, slurmctld and munged (each by its pid file)."""
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


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False
