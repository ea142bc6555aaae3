"""`workbench run --launcher slurm --nodes N --gpus-per-node G`: one DDP run across nodes.

One SLURM job of N nodes x G tasks (one task per GPU; on CPU nodes ``--nproc``
tasks per node), submitted with submitit, which runs each task under ``srun``.
Each task takes its place in the run from submitit's view of the job
(``TorchDistributedEnvironment``: MASTER_ADDR = the first node, a port derived
from the job id, RANK, WORLD_SIZE, LOCAL_RANK), then runs the very ``workbench run``
command a torchrun worker runs -- the same DDP code path as ``--nproc`` and the
Gloo tests. ``train.batch_size`` stays the global batch (it must split over the
N x G ranks); the learning rate belongs to that global batch.
"""

from __future__ import annotations

import pickle
import signal
import time
from collections.abc import Callable
from pathlib import Path

import submitit
import typer

from workbench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError
from workbench.launch import slurm as cluster

JOB_NAME = "wb-run"


def launch(
    cli_args: list[str],
    resources: cluster.SlurmResources,
    *,
    nodes: int,
    tasks_per_node: int,
    folder: Path,
    wait: bool = True,
    echo: Callable[[str], None] = print,
    poll_s: float = 2.0,
) -> int:
    """Submit `workbench <cli_args>` on nodes x tasks_per_node ranks; with `wait`, return its exit code."""
    if nodes < 1:
        raise ConfigError(f"--nodes {nodes}: must be >= 1")
    if resources.gpus < 0:
        raise ConfigError(f"--gpus-per-node {resources.gpus}: must be >= 0")
    partition = cluster.check_partition(resources, gpu_option="--gpus-per-node", cpu_option="--cpus-per-task")
    if nodes > partition.nodes:
        raise ConfigError(f"--nodes {nodes}: partition {partition.name!r} has {partition.nodes} node(s)")
    ex = cluster.executor(
        folder.resolve(), resources, partition, name=JOB_NAME, nodes=nodes, tasks_per_node=tasks_per_node
    )
    job = ex.submit(run_rank, cli_args)
    log = folder.resolve() / f"{job.job_id}_0_log.out"
    echo(
        f"submitted job {job.job_id}: {nodes} node(s) x {tasks_per_node} rank(s) on partition {partition.name!r}; "
        f"log: {log}"
    )
    if not wait:
        return EXIT_OK
    try:
        while str(job.job_id) in cluster.active_jobs(JOB_NAME):
            time.sleep(poll_s)
    except KeyboardInterrupt:
        echo(f"stopped watching; the job keeps running (scancel {job.job_id} stops it)")
        return EXIT_INTERRUPTED
    code = _exit_code(folder.resolve() / f"{job.job_id}_0_result.pkl")
    tail = log.read_text(errors="replace").strip().splitlines()[-12:] if log.is_file() else []
    echo("\n".join(line for line in tail if not line.startswith("submitit ")))
    if code != EXIT_OK:
        echo(f"job {job.job_id} failed (rank 0 exit code {code}); log: {log}")
    return code


def _exit_code(result_pickle: Path) -> int:
    """Rank 0's exit code from submitit's result file; 1 when the job died without one (cancelled, killed)."""
    if not result_pickle.is_file():
        return EXIT_FAILED
    with result_pickle.open("rb") as handle:
        outcome, value = pickle.load(handle)
    return int(value) if outcome == "success" and isinstance(value, int) else EXIT_FAILED


def run_rank(cli_args: list[str]) -> int:
    """One rank, in its SLURM task: export the torch.distributed environment, then `workbench <cli_args>`."""
    # deferred: the CLI imports this module to submit the job; here, inside the job, the rank
    # re-enters the CLI (the one upward edge of the layering, INTERFACES.md)
    from workbench.cli import app

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # scancel: the run is marked KILLED (submitit ignores it)
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    try:
        code = typer.main.get_command(app).main(args=cli_args, prog_name="workbench", standalone_mode=False)
    except SystemExit as done:
        code = done.code
    return int(code or EXIT_OK)
