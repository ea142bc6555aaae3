"""The Grad-CAM in-object share carries its own reference: the object's area fraction, logged as
`eval/attention/chance_gradcam_in_object`, so an ablation table's reference row shows what a
uniform map scores next to the share (issue 24: the demo's table shows Grad-CAM)."""

from __future__ import annotations

import torch
from tiny_config import TINY_MODEL

from workbench.config import load_config
from workbench.evaluate.attention import gradcam_in_object
from workbench.evaluate.retrieval import built_objective
from workbench.reports.references import strongest


def test_gradcam_share_logs_the_object_area_as_its_chance_reference(shapes_tiny):
    from workbench.data import load_tokenizer
    from workbench.models import build_model
    from workbench.objectives import build_objectives

    overrides = [
        *TINY_MODEL,
        f"data.root={shapes_tiny}",
        "data.shapes_size=tiny",
        "train.device=cpu",
        "eval.batch_size=16",
        "model.fusion.layers=2",
        "objectives.softmask.layer=0",
    ]
    cfg = load_config("base", overrides)
    tokenizer = load_tokenizer(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()
    special = {
        "pad": tokenizer.pad_token_id,
        "mask": tokenizer.mask_token_id,
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
    }
    objectives = build_objectives(cfg.objectives, model.dims, special, len(tokenizer)).eval()
    metrics = gradcam_in_object(model, built_objective(objectives, "itm"), cfg, tokenizer, torch.device("cpu"))

    area = metrics["eval/attention/object_area"]
    assert 0.0 < area < 1.0
    assert metrics["eval/attention/chance_gradcam_in_object"] == area
    reference = strongest("eval/attention/gradcam_in_object", metrics)
    assert reference is not None and reference.kind == "chance" and reference.mean == area


def test_the_demo_has_a_fusion_layer_for_its_grad_cam():
    """`make demo`'s attention figure and table show Grad-CAM: the demo's Grad-CAM layer must be
    a fusion layer before the last (with one fusion layer every word cam was 0: "(all 0)")."""
    from workbench.evaluate.attention import gradcam_layer

    cfg = load_config("demo")
    assert cfg.model.fusion.layers >= 2
    assert gradcam_layer(cfg) == cfg.objectives.softmask.layer
    assert cfg.objectives.itm.enabled
