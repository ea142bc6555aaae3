"""Overrides that make a run take seconds on CPU: tiny widths, few steps, tiny data."""

TINY_MODEL = [
    "model.vision.width=32",
    "model.vision.depth=1",
    "model.vision.heads=2",
    "model.vision.patch_size=16",
    "model.text.width=32",
    "model.text.depth=1",
    "model.text.heads=2",
    "model.fusion.width=32",
    "model.fusion.layers=1",
    "model.fusion.heads=2",
    "objectives.itc.embed_dim=16",
    # the experiments' uni-modal warm start takes minutes; tests of it: tests/test_warmstart.py
    "model.vision.init=random",
    "model.text.init=random",
]


def tiny_run(data_root, tracking_uri, out_dir, *extra, steps=6):
    """Overrides for a complete (train + eval) run of `steps` steps in a few seconds."""
    return TINY_MODEL + [
        f"data.root={data_root}",
        "data.shapes_size=tiny",
        f"tracking.uri={tracking_uri}",
        f"train.out_dir={out_dir}",
        f"train.steps={steps}",
        "train.batch_size=8",
        "train.warmup_steps=2",
        "train.log_every=2",
        "train.checkpoint_every=0",
        "train.device=cpu",
        "eval.tasks=[retrieval]",
        "eval.rerank_k=4",
        "eval.finetune_steps=2",
        "eval.batch_size=16",
        *extra,
    ]


# Objectives whose losses one process and several DDP ranks compute alike on the same global batch
# (no per-rank random draws: no ITM negatives, no MLM/MLSC masks, no image masking); used with a
# dropout-free text encoder (conftest's bert_without_dropout).
DDP_COMPARABLE = [
    "objectives.itm.enabled=false",
    "objectives.mlm.enabled=false",
    "objectives.scl.mlsc=false",
    "objectives.scl.image_mask_ratio=0.0",
    "objectives.scl.target=clean_pass",
]
