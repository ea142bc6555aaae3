"""`workbench bench`: FLOP counting, time attribution, overhead math, and a --quick smoke run.

No test asserts a time: only counts, shares that must add up, and what is attributed where.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from workbench.bench import BenchOptions, render, run_bench
from workbench.bench.breakdown import Breakdown, category, profile_step
from workbench.bench.measure import count_flops
from workbench.bench.overheads import LoopBlock, Overheads
from workbench.bench.setup import (
    PAPER_VOCABULARY,
    TrainStep,
    Vocabulary,
    bench_config,
    build_pretrainer,
    synthetic_batch,
)
from workbench.cli import app
from workbench.errors import ConfigError

ALL_PASSES = {"clean", "itm_negatives", "masked_text", "masked_image", "mlm", "softmask_masked"}


# ------------------------------------------------------------------- FLOPs
def test_flops_of_a_linear_forward_and_backward_are_three_matmuls():
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8, requires_grad=True)
    total, by_op = count_flops(lambda: layer(x).sum().backward())
    # forward x@W^T: 2*4*8*16; backward: grad_x and grad_W, the same size each
    assert total == 3 * 2 * 4 * 8 * 16
    assert by_op == {"addmm": 1024, "mm": 2048}


def test_cpu_attention_is_counted():
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    total, by_op = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    # QK^T: 2 heads x 5x4 @ 4x5 and PV: 2 x 5x5 @ 5x4, 2 FLOPs per multiply-add each
    assert total == 2 * (2 * 5 * 4 * 5) * 2


# ------------------------------------------------------------- attribution
@pytest.mark.parametrize(
    "labels,expected",
    [
        (["encode", "pass/masked_text", "objective/scl", "step"], "pass/masked_text"),
        (["fuse", "pass/clean", "objective/itm", "step"], "pass/clean"),
        (["fuse", "objective/itm", "step"], "pass/itm_negatives"),
        (["fuse", "objective/softmask", "step"], "pass/softmask_masked"),
        (["encode", "objective/itc", "step"], "encoders"),
        (["objective/mlm", "step"], "objective/mlm"),
        (["optimizer", "step"], "optimizer"),
        (["backward", "step"], "backward"),
        (["step"], "other"),
        ([], "other"),
    ],
)
def test_time_goes_to_the_innermost_pass_then_encoders_then_the_objective(labels, expected):
    assert category(labels) == expected


def test_a_pass_read_by_two_objectives_is_split_evenly():
    breakdown = Breakdown(
        step_s=1.0,
        components={
            "pass/clean": 0.4,
            "pass/mlm": 0.2,
            "objective/itm": 0.1,
            "objective/softmask": 0.05,
            "encoders": 0.15,
            "optimizer": 0.1,
        },
        readers={"clean": ["itm", "softmask"], "mlm": ["mlm"]},
    )
    assert breakdown.passes == {"clean": 0.4, "mlm": 0.2}
    assert breakdown.objectives == pytest.approx({"itm": 0.3, "softmask": 0.25, "mlm": 0.2})


@pytest.fixture(scope="module")
def tiny_step():
    cfg = bench_config("base", quick=True, overrides=["data.image_size=32", "model.vision.patch_size=16"])
    torch.manual_seed(0)
    vocab = Vocabulary(60, 0, {"pad": 0, "cls": 2, "sep": 3, "mask": 4})
    step = TrainStep(build_pretrainer(cfg, vocab), cfg, torch.device("cpu"))
    return step, synthetic_batch(cfg, vocab, 4)


def test_profiled_step_splits_into_every_pass_and_objective_and_cleans_up(tiny_step):
    step, batch = tiny_step
    breakdown = profile_step(step, batch)
    assert math.isclose(sum(breakdown.components.values()), 1.0, rel_tol=1e-9)
    assert set(breakdown.passes) == ALL_PASSES
    assert breakdown.readers["clean"] == ["itm", "softmask"]  # ITM positives + Grad-CAM
    assert breakdown.readers["masked_text"] == ["scl"] and breakdown.readers["mlm"] == ["mlm"]
    assert set(breakdown.objectives) == {"itc", "itm", "mlm", "scl", "softmask"}
    assert {"encoders", "optimizer"} <= set(breakdown.components)
    # the labels are gone: the model's own methods and no hooks on the objectives
    model, objectives = step.pretrainer.model, step.pretrainer.objectives
    assert not {"fuse", "encode_image", "encode_text"} & set(vars(model))
    assert "context" not in vars(objectives)
    assert all(not getattr(objectives, t)._forward_pre_hooks for t in objectives.built)


# ------------------------------------------------------------------ setup
def test_compile_compiles_the_encoders_and_fusion_in_place():
    cfg = bench_config("base", quick=True, overrides=["train.compile=true"])
    vocab = Vocabulary(60, 0, {"pad": 0, "cls": 2, "sep": 3, "mask": 4})
    eager_keys = list(build_pretrainer(cfg, vocab).state_dict())
    step = TrainStep(build_pretrainer(cfg, vocab), cfg, torch.device("cpu"))  # compiles lazily: no call here
    model = step.pretrainer.model
    assert all(m._compiled_call_impl is not None for m in (model.vision, model.text, model.fusion))
    assert step.pretrainer.objectives._compiled_call_impl is None  # random draws, Grad-CAM: eager
    assert list(step.pretrainer.state_dict()) == eager_keys  # checkpoints load either way


def test_synthetic_batch_is_bert_style():
    cfg = bench_config("paper")
    batch = synthetic_batch(cfg, PAPER_VOCABULARY, 3)
    ids, mask = batch["text_ids"], batch["text_mask"]
    assert batch["image"].shape == (3, 1, 3, 224, 224) and ids.shape == (3, cfg.data.max_text_len)
    lengths = mask.sum(dim=1)
    assert lengths[0] == cfg.data.max_text_len and (lengths >= cfg.data.max_text_len // 2).all()
    assert (ids[:, 0] == 101).all() and (ids[torch.arange(3), lengths - 1] == 102).all()
    assert (ids[mask == 0] == 0).all()
    words = ids[:, 1:][mask[:, 1:].bool() & (ids[:, 1:] != 102)]
    assert (words > 103).all()


def test_bench_configs_turn_every_objective_on_and_paper_needs_no_files():
    paper = bench_config("paper")
    assert paper.objectives.softmask.enabled and paper.objectives.scl.mvsc and paper.objectives.mlm.enabled
    assert (paper.model.vision.timm_name, paper.model.text.hf_name) == ("", "")
    assert (paper.model.vision.width, paper.model.vision.depth, paper.model.fusion.layers) == (768, 12, 6)
    assert paper.data.image_size == 224
    with pytest.raises(ConfigError, match="bench --config: 'huge' is not one of base, paper"):
        bench_config("huge")


# --------------------------------------------------------------- overheads
def test_loop_overheads_are_shares_of_loop_time():
    overheads = Overheads(
        blocks=[
            LoopBlock(True, steps=10, total_s=11.0, load_s=0.5, tracking_s=0.1, worker_cpu_s=0.1),
            LoopBlock(False, steps=10, total_s=10.0, load_s=0.5),
            LoopBlock(False, steps=10, total_s=12.0, load_s=0.0),
            LoopBlock(True, steps=10, total_s=13.0, load_s=0.4, tracking_s=0.2, worker_cpu_s=0.0),
        ],
        run_starts_s=[0.5, 0.7],
    )
    assert overheads.data_loading_share == pytest.approx(1.4 / 46.0)
    assert overheads.tracking_ab == pytest.approx(1.2 / 1.1 - 1.0)  # median step on / off
    assert overheads.tracking_direct == pytest.approx(0.4 / 24.0)
    assert overheads.noise == pytest.approx(0.2 / 1.1)
    assert overheads.run_start_s == pytest.approx(0.6)


# ------------------------------------------------------------- smoke run
@pytest.fixture(scope="module")
def quick_result():
    return run_bench(BenchOptions(quick=True))


def test_quick_bench_measures_both_configs_and_the_loop(quick_result):
    data = json.loads(json.dumps(quick_result.to_dict()))
    assert [c["config"] for c in data["configs"]] == ["base", "paper"]
    for entry in data["configs"]:
        assert entry["flops_per_step"] > 0 and entry["mfu"] > 0 and entry["best_mfu"] > 0
        assert entry["best_step_s"] == min(entry["step_times_s"]) <= entry["step_s"]
        assert entry["best_samples_per_s"] == pytest.approx(entry["batch_size"] / entry["best_step_s"])
        assert entry["fusion_passes"] == len(ALL_PASSES)
        assert set(entry["passes"]) == ALL_PASSES
        assert math.isclose(sum(entry["components"].values()), 1.0, rel_tol=1e-9)
    loop = data["loop"]
    assert [b["tracked"] for b in loop["blocks"]] == [True, False]
    assert 0 <= loop["data_loading_share"] < 1 and loop["tracking_overhead_direct"] >= 0
    table = render(quick_result)
    for text in ("MFU", "itm_negatives", "softmask", "data loading", "tracking overhead"):
        assert text in table


def test_cli_bench_prints_a_table_and_rejects_an_unknown_config():
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "--config", "huge", "--quick"])
    assert bad.exit_code == 2 and "bench --config: 'huge' is not one of base, paper" in bad.output
    good = runner.invoke(app, ["bench", "--quick", "--config", "paper"])
    assert good.exit_code == 0, good.output
    assert "paper" in good.output and "samples/s" in good.output and "training loop" not in good.output


def test_cli_bench_json_is_the_whole_stdout():
    """`bench --json` output is piped into tools: generating the data set says so on stderr, not in the JSON."""
    out = CliRunner().invoke(app, ["bench", "--quick", "--config", "base", "--json"])  # tiny data made in a temp dir
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["configs"][0]["config"] == "base"
    assert "generating ShapesWorld" in out.stderr
