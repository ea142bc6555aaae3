"""Launchers: where work runs when it does not run in this process (local ranks, a SLURM cluster).

``torchrun``: `python -m workbench.launch.torchrun`, torchrun for `workbench run --nproc N`
minus its tracebacks;

``slurm``: the cluster as the submitting host sees it (sbatch on PATH, partitions,
the sweep's queued jobs) and the resources a job asks for; ``slurm_env``: how a
process running inside a SLURM job names its job (tags on runs and trials);
``slurm_run``: one DDP run across nodes.
"""

from enum import StrEnum


class Launcher(StrEnum):
    """`--launcher` of `workbench run` and `workbench sweep`: where the work runs. The one list of
    launchers; Typer refuses any other value with these listed."""

    local = "local"  # this machine (in this process, torchrun ranks, or the sweep's trial processes)
    slurm = "slurm"  # SLURM jobs (`launch.slurm_run` for a run, `sweeps.slurm` for a sweep's workers)
