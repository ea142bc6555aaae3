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


@pytest.fixture
def bert_without_dropout(tmp_path, shapes_tiny):
    """A local tiny BERT (model.text.hf_name) with dropout 0: dropout draws per rank would differ."""
    import torch
    from transformers import BertConfig, BertModel

    from workbench.config import load_config
    from workbench.data import load_tokenizer

    tokenizer = load_tokenizer(load_config("base", [f"data.root={shapes_tiny}"]).data)
    config = BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"
