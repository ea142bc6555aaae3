"""How a process inside a SLURM job names its job: read from the variables slurmd sets.

Runs and sweep trials carry these as tags / user attributes, so an MLflow run or an
Optuna trial leads back to its job (``sacct -j``, the job's log file) and node.
Outside SLURM every function returns nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from workbench import tags as tag

JOB_TAG = tag.SLURM_JOB_ID
NODE_TAG = tag.SLURM_NODE
RESTART_TAG = tag.SLURM_RESTART


def job_id(env: Mapping[str, str] | None = None) -> str | None:
    """This job's id; an array task is ``ARRAYID_TASKID`` as squeue and scancel spell it."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def job_tags(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """{job id, node, restart count} of the SLURM job this process runs in; {} outside SLURM."""
    env = os.environ if env is None else env
    found = job_id(env)
    if found is None:
        return {}
    tags = {JOB_TAG: found, RESTART_TAG: env.get("SLURM_RESTART_COUNT", "0")}
    node = env.get("SLURMD_NODENAME")
    if node:
        tags[NODE_TAG] = node
    return tags
