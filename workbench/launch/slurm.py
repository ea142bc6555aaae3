"""The SLURM cluster as the submitting host sees it, and what a job asks of it.

Checks before anything is submitted (one-line errors naming the option): sbatch
on PATH, the partition exists (``sinfo``), GPUs asked of a partition that has
them, and a warning when a path every job must share (the Optuna journal, the
checkpoints, a SQLite MLflow store) sits on a node-local filesystem while the
partition has several nodes. Jobs are submitted with submitit (``executor``):
it writes the sbatch script, pickles the call and runs it under ``srun`` on the
node. Every option is checked against its grammar first and reaches sbatch as an
argument, never as script text (``slurm_options``, ``sbatch_executor``). Queued
jobs are read with ``squeue`` (``active_jobs``), not ``sacct``: a cluster without
accounting (slurmdbd) still answers squeue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, did_you_mean
from workbench.launch import slurm_options

# filesystems that every node of a cluster may mount (a journal or checkpoint on anything else is node-local)
SHARED_FILESYSTEMS = {
    "nfs",
    "nfs4",
    "lustre",
    "gpfs",
    "beegfs",
    "cephfs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "pvfs2",
    "orangefs",
    "wekafs",
    "panfs",
    "fuse.juicefs",
    "fuse.sshfs",
    "cifs",
    "smb3",
    "9p",
    "virtiofs",
    "afs",
    "fuse.s3fs",
}
SIGNAL_DELAY_S = 120  # SIGUSR2 this long before the time limit: trials stop, their runs are marked KILLED


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int
    gpus_per_node: int  # the most GPUs (gres gpu) on one of its nodes; 0 = a CPU partition
    time_limit: str  # sinfo's %l: "infinite", "1-00:00:00", ...
    default: bool = False


@dataclass
class SlurmResources:
    """What each job asks for (sbatch options); None = the partition's default."""

    partition: str | None = None
    gpus: int = 0  # per trial (sweeps) or per node (multi-node runs)
    cpus: int | None = None  # per task
    mem: str | None = None  # per node, sbatch syntax: 16G, 500M
    time: str | None = None  # sbatch syntax: MM, HH:MM:SS, D-HH:MM:SS (default: the partition's limit)
    extra: list[str] = field(default_factory=list)  # more sbatch options, long form: --account=abc, --hold


def require_sbatch(option: str = "--launcher slurm") -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError(
            f"{option}: sbatch is not on PATH — run this on a SLURM login node (or drop {option} to run on this "
            "machine)"
        )


def _slurm(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError(f"--launcher slurm: {args[0]} is not on PATH — run this on a SLURM login node") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"--launcher slurm: `{' '.join(args)}` did not answer in 60 s (is slurmctld up?)") from None
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
        raise ConfigError(f"--launcher slurm: `{' '.join(args)}` failed: {why}")
    return done.stdout


def gpus_in_gres(gres: str) -> int:
    """GPUs in an sinfo GRES field: 'gpu:4', 'gpu:a100:8(S:0-1)', 'gpu:2,shard:8' -> 4, 8, 2; '(null)' -> 0."""
    total = 0
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def partitions() -> list[Partition]:
    """Every partition sinfo lists (one line per partition x node group, merged)."""
    merged: dict[str, Partition] = {}
    for line in _slurm("sinfo", "-h", "-o", "%P|%D|%G|%l").splitlines():
        if not line.strip():
            continue
        name, nodes, gres, limit = (line.split("|") + ["", "", ""])[:4]
        default = name.endswith("*")
        name = name.rstrip("*")
        count = int(nodes) if nodes.isdigit() else 0
        old = merged.get(name)
        if old is None:
            merged[name] = Partition(name, count, gpus_in_gres(gres), limit, default)
        else:
            merged[name] = Partition(
                name, old.nodes + count, max(old.gpus_per_node, gpus_in_gres(gres)), limit, default
            )
    return list(merged.values())


def check_partition(
    resources: SlurmResources, gpu_option: str = "--gpus-per-trial", cpu_option: str = "--cpus-per-trial"
) -> Partition:
    """The partition jobs go to; refuse a malformed option, an unknown partition, or GPUs on one without them."""
    slurm_options.check_resources(resources, gpu_option=gpu_option, cpu_option=cpu_option)
    require_sbatch()
    found = partitions()
    names = [p.name for p in found]
    if resources.partition is None:
        chosen = next((p for p in found if p.default), None)
        if chosen is None:
            raise ConfigError(
                f"--partition: this cluster has no default partition; choose one of: {', '.join(names) or 'none'}"
            )
    else:
        chosen = next((p for p in found if p.name == resources.partition), None)
        if chosen is None:
            hint = did_you_mean(resources.partition, names)
            raise ConfigError(
                f"--partition {resources.partition!r}: no such partition{hint}; sinfo lists: "
                f"{', '.join(names) or 'none'}"
            )
    if resources.gpus > 0 and chosen.gpus_per_node == 0:
        with_gpus = [p.name for p in found if p.gpus_per_node > 0]
        where = f"partitions with GPUs: {', '.join(with_gpus)}" if with_gpus else "sinfo shows no partition with GPUs"
        raise ConfigError(f"{gpu_option} {resources.gpus}: partition {chosen.name!r} has no GPUs ({where})")
    if resources.gpus > chosen.gpus_per_node > 0:
        raise ConfigError(
            f"{gpu_option} {resources.gpus}: the nodes of partition {chosen.name!r} have at most "
            f"{chosen.gpus_per_node} GPUs"
        )
    return chosen


def sbatch_options(extra: list[str]) -> dict[str, Any]:
    """`--sbatch-arg` values ('--account=abc', '--hold') as submitit's additional_parameters (allowed
    scheduling options only: slurm_options.ALLOWED)."""
    return slurm_options.sbatch_options(extra)


def executor(
    folder: Path,
    resources: SlurmResources,
    partition: Partition,
    *,
    name: str,
    nodes: int = 1,
    tasks_per_node: int = 1,
) -> Any:
    """A submitit SlurmExecutor for jobs of `resources` (job logs and pickles under `folder`, which
    every node must see). The job runs this Python (same venv) in the current directory."""
    # deferred: only submitting needs submitit; every `workbench sweep` imports this module
    from workbench.launch.sbatch_executor import ArgvSlurmExecutor

    slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
    slurm_options.check_argument("the job name", name)
    slurm_options.check_argument("the job folder (under train.out_dir)", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    ex = ArgvSlurmExecutor(folder=folder)  # runs this Python (submitit's default, shell-quoted)
    extra = {"time": resources.time or _limit(partition.time_limit), **sbatch_options(resources.extra)}
    if resources.mem:
        extra["mem"] = resources.mem
    params: dict[str, Any] = {
        "job_name": name,
        "partition": partition.name,
        "nodes": nodes,
        "ntasks_per_node": tasks_per_node,
        "signal_delay_s": SIGNAL_DELAY_S,
        "additional_parameters": extra,
        "stderr_to_stdout": True,
    }
    if resources.cpus:
        params["cpus_per_task"] = resources.cpus
    if resources.gpus:
        params["gpus_per_node"] = resources.gpus
    ex.update_parameters(**params)
    return ex


def _limit(time_limit: str) -> str:
    return "UNLIMITED" if time_limit in ("", "infinite", "n/a") else time_limit


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    node: str  # where it runs ('' while pending)
    reason: str  # why it is pending ('None' when running)


def active_jobs(name: str) -> dict[str, QueuedJob]:
    """Jobs named `name` that squeue still lists (pending, running, completing, requeued), by id."""
    out = _slurm("squeue", "-h", "--name", name, "-o", "%i|%T|%N|%r")
    jobs = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            jobs[parts[0]] = QueuedJob(*parts)
    return jobs


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _slurm("scancel", *job_ids)


def requeue(job_id: str) -> None:
    _slurm("scontrol", "requeue", job_id)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` lives on (the longest mount point in /proc/mounts above it)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def unshared_paths(paths: dict[str, Path], partition: Partition) -> list[str]:
    """Warnings for paths the jobs must share that sit on a node-local filesystem of a multi-node partition."""
    if partition.nodes <= 1:
        return []
    warnings = []
    for what, path in paths.items():
        kind = filesystem_type(path)
        if kind not in SHARED_FILESYSTEMS:
            warnings.append(
                f"warning: {what} {path} is on a {kind} filesystem, which the other nodes of partition "
                f"{partition.name!r} may not see; put it on a shared filesystem (NFS, Lustre, ...) or use an RDB "
                "--storage"
            )
    return warnings
