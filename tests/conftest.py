"""Shared fixtures. `shapes_tiny`: ShapesWorld `tiny` (seed 0), generated once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_tiny(tmp_path_factory) -> Path:
    """Root of a ShapesWorld `tiny` data set (seed 0, with its tokenizer). Treat it as read-only."""
    from workbench.data.shapes import generate

    root = tmp_path_factory.mktemp("shapesworld") / "tiny"
    generate(root, seed=0, size="tiny")
    return root


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM cluster (munged, slurmctld, slurmd on 127.0.0.1), started once, stopped at the end.

    Clients (sbatch, squeue, submitit) find it through SLURM_CONF; jobs inherit this environment.
    """
    import slurm_cluster as slurm

    cluster = slurm.start(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        slurm.stop(cluster)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
