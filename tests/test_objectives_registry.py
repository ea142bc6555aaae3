"""Every registered objective, looped over (timm style): it trains its parameters, turning it off
removes its passes and loss keys, and the pass plan merges requests by the rules of passes.py."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import torch

from tests.test_objectives_grad import SPECIAL, VOCAB, config, make_batch, setup, step
from workbench.config import ObjectivesConfig
from workbench.objectives import OBJECTIVES, combiner
from workbench.objectives.context import special_token_mask
from workbench.objectives.masking import ALL_MASK, BERT_SPLIT, mask_tokens
from workbench.objectives.passes import (
    CleanPass,
    MaskedImagePass,
    MaskedTextPass,
    PassConflict,
    ReuseMaskedText,
    plan,
)
from workbench.objectives.spec import BuildInputs

ALL_ON = tuple(OBJECTIVES)


def needed(names: set[str]) -> set[str]:
    """``names`` plus every objective they declare they need."""
    return names | {other for name in names for other in OBJECTIVES[name].needs}


def needing(names: set[str]) -> set[str]:
    """``names`` plus every objective that needs one of them (off together)."""
    return names | {name for name, spec in OBJECTIVES.items() if set(spec.needs) & names}


def requested_passes(cfg, names) -> dict[str, set[str]]:
    """Pass name -> the objectives (among ``names``) that ask for it."""
    inputs = BuildInputs({}, VOCAB, SPECIAL)
    asked: dict[str, set[str]] = {}
    for name in names:
        for pass_name in OBJECTIVES[name].passes(getattr(cfg.objectives, name), inputs):
            asked.setdefault(pass_name, set()).add(name)
    return asked


def test_the_registry_covers_every_objective_config_section():
    assert set(OBJECTIVES) == {f.name for f in dataclasses.fields(ObjectivesConfig)}
    assert all(spec.name == name for name, spec in OBJECTIVES.items())
    assert all(set(spec.needs) <= set(OBJECTIVES) for spec in OBJECTIVES.values())


def test_the_combiner_names_no_objective():
    source = inspect.getsource(combiner)
    assert [name for name in OBJECTIVES if re.search(rf"\b{name}\b", source, re.IGNORECASE)] == []


@pytest.mark.parametrize("name", ALL_ON)
def test_every_registered_objective_trains_its_parameters(name):
    on = needed({name})
    model, objectives = setup(config(on=tuple(on)))
    _, out = step(model, objectives, make_batch(4))
    own = getattr(objectives, name)
    assert {k for k in out if k.startswith("loss/")} == {
        f"loss/{loss}" for term in on for loss in getattr(objectives, term).names
    }
    out["loss"].backward()
    params = list(own.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any() for _, p in params), [
        n for n, p in params if p.grad is None or not p.grad.any()
    ]


@pytest.mark.parametrize("name", ALL_ON)
def test_turning_an_objective_off_removes_its_passes_and_loss_keys(name):
    off = needing({name})
    kept = tuple(n for n in ALL_ON if n not in off)
    full_cfg, part_cfg = config(on=ALL_ON), config(on=kept)
    model, full = setup(full_cfg)
    _, part = setup(part_cfg)
    with torch.no_grad():
        full_ctx, full_out = step(model.eval(), full, make_batch())
        part_ctx, part_out = step(model, part, make_batch())
    gone = {loss for term in off for loss in getattr(full, term).names}
    assert gone and {f"loss/{loss}" for loss in gone} <= set(full_out)
    assert not any(key.split("/")[1] in gone for key in part_out if "/" in key)
    assert not any(hasattr(part, term) for term in off)
    asked = requested_passes(full_cfg, ALL_ON)
    only_theirs = {p for p, askers in asked.items() if askers <= off}
    assert not only_theirs & set(part.recipes) and not only_theirs & set(part_ctx.passes_run)
    assert set(part.recipes) == set(requested_passes(part_cfg, kept))
    assert part_ctx.fusion_passes <= full_ctx.fusion_passes - len(only_theirs)


# ------------------------------------------------------------------ the plan
def masked_text(**changes) -> MaskedTextPass:
    fields = {"ratio": 0.4, "exact": True, "split": ALL_MASK, "mask_id": 4, "vocab_size": 30, "shareable": True}
    return MaskedTextPass(**(fields | changes))


def test_two_objectives_asking_one_pass_differently_is_a_conflict_naming_both():
    with pytest.raises(PassConflict, match=r"'masked_image': first asks for .*0\.5.*second for .*0\.6"):
        plan([("first", {"masked_image": MaskedImagePass(0.5)}), ("second", {"masked_image": MaskedImagePass(0.6)})])
    same = plan([("first", {"masked_image": MaskedImagePass(0.5)}), ("second", {"masked_image": MaskedImagePass(0.5)})])
    assert same.passes == {"masked_image": MaskedImagePass(0.5)}


def test_the_clean_pass_returns_attention_when_any_reader_asks():
    for requests in ([CleanPass(), CleanPass(True)], [CleanPass(True), CleanPass()]):
        merged = plan([(f"objective{i}", {"clean": p}) for i, p in enumerate(requests)])
        assert merged.passes == {"clean": CleanPass(return_attention=True)}


def test_mlm_reads_the_shareable_mlsc_pass_with_its_own_split_else_runs_its_own():
    own = masked_text(ratio=0.15, exact=False, split=BERT_SPLIT, shareable=False)
    shared = plan([("mlm", {"mlm": ReuseMaskedText(own)}), ("scl", {"masked_text": masked_text()})])
    assert shared.passes == {"masked_text": masked_text(split=BERT_SPLIT)}
    assert shared.served_by == {"mlm": "masked_text"}
    target_only = plan([("mlm", {"mlm": ReuseMaskedText(own)}), ("scl", {"masked_text": masked_text(shareable=False)})])
    assert target_only.passes == {"mlm": own, "masked_text": masked_text(shareable=False)}
    assert target_only.served_by == {}


def test_a_masked_text_pass_needs_a_mask_id_and_a_vocabulary():
    with pytest.raises(ValueError, match="'mask'"):
        masked_text(mask_id=-1)
    with pytest.raises(ValueError, match="vocab_size must be >= 1, got 0"):
        masked_text(vocab_size=0)


def test_scl_reads_its_mask_ratios_into_its_passes():
    cfg = config(on=("scl",), **{"scl.image_mask_ratio": 0.6, "scl.text_mask_ratio": 0.3}).objectives.scl
    passes = OBJECTIVES["scl"].passes(cfg, BuildInputs({}, VOCAB, SPECIAL))
    assert passes == {"masked_image": MaskedImagePass(0.6), "masked_text": masked_text(ratio=0.3, vocab_size=VOCAB)}


def test_training_masks_captions_with_mask_tokens():
    """One masking path: the pass's corrupted caption is ``mask_tokens``'s for the same seed."""
    model, objectives = setup(config(on=("mlm",)))
    batch = make_batch()
    ctx, _ = step(model.eval(), objectives, batch, seed=5)
    special = special_token_mask(batch["text_ids"], batch["text_mask"], SPECIAL)
    seeded = torch.Generator().manual_seed(5)
    corrupted, labels = mask_tokens(batch["text_ids"], special, 0.15, seeded, SPECIAL["mask"], VOCAB)
    assert torch.equal(ctx.pass_("mlm")["text_ids"], corrupted)
    assert torch.equal(ctx.pass_("mlm")["mlm_labels"], labels)
