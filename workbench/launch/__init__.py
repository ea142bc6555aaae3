"""Launchers: where work runs when it does not run in this process (local ranks, a SLURM cluster).

``torchrun``: `python -m workbench.launch.torchrun`, torchrun for `workbench run --nproc N`
minus its tracebacks;

``slurm``: the cluster as the submitting host sees it (sbatch on PATH, partitions,
the sweep's queued jobs) and the resources a job asks for; ``slurm_env``: how a
process running inside a SLURM job names its job (tags on runs and trials);
``slurm_run``: one DDP run across nodes.
"""
