"""Objectives on the real VLPModel: every pooling x every objective trains, toggles remove compute."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from workbench import preflight
from workbench.config import load_config
from workbench.errors import ConfigError
from workbench.models import VLPModel
from workbench.models.vision import POOLINGS
from workbench.objectives import build_objectives
from workbench.objectives.masking import IGNORE
from workbench.objectives.mlm import masked_lm_loss
from workbench.objectives.passes import MaskedImagePass
from workbench.objectives.scl import completion_loss

IMAGE_SIZE, PATCH, WIDTH, VOCAB, MAX_LEN = 16, 4, 32, 40, 12
N = (IMAGE_SIZE // PATCH) ** 2
SPECIAL = {"pad": 0, "cls": 2, "sep": 3, "mask": 4}
TERMS = ("itc", "itm", "mlm", "scl", "softmask")  # registry order (test_objectives_registry loops over it)
LOSSES = {"itc": ["itc"], "itm": ["itm"], "mlm": ["mlm"], "scl": ["mvsc", "mlsc"], "softmask": ["softmask_itm"]}


def config(pooling="frame_cls", on=TERMS, fusion_layers=2, **overrides):
    base = {
        "data.image_size": IMAGE_SIZE,
        "data.max_text_len": MAX_LEN,
        "model.vision.patch_size": PATCH,
        "model.vision.width": WIDTH,
        "model.vision.depth": 1,
        "model.vision.heads": 2,
        "model.vision.pooling": pooling,
        "model.text.width": WIDTH,
        "model.text.depth": 1,
        "model.text.heads": 2,
        "model.fusion.width": WIDTH,
        "model.fusion.heads": 2,
        "model.fusion.layers": fusion_layers,
        "objectives.itc.embed_dim": 16,
        "objectives.softmask.layer": 0,
    }
    base |= {f"objectives.{name}.enabled": name in on for name in TERMS}
    return load_config(None, {**base, **{f"objectives.{k}": v for k, v in overrides.items()}})


def new_model(cfg, seed=0):
    torch.manual_seed(seed)
    return VLPModel(
        cfg.model, vocab_size=VOCAB, pad_token_id=SPECIAL["pad"], image_size=IMAGE_SIZE, max_text_len=MAX_LEN
    )


def setup(cfg, seed=0):
    model = new_model(cfg, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hard negatives without ITC
        objectives = build_objectives(cfg.objectives, model.dims, SPECIAL)
    return model, objectives


def make_batch(num_frames=1, batch_size=4, seed=0):
    """[CLS] words [SEP] [PAD]*, random pixels; rows 0 and 1 caption the same image."""
    g = torch.Generator().manual_seed(seed)
    length = 10
    ids = torch.randint(5, VOCAB, (batch_size, length), generator=g)
    lengths = torch.tensor([10, 7, 5, 4])[:batch_size]
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[:, 0] = SPECIAL["cls"]
    ids[torch.arange(batch_size), lengths - 1] = SPECIAL["sep"]
    ids[mask == 0] = SPECIAL["pad"]
    image = torch.randn(batch_size, num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    image[1] = image[0]
    return {"image": image, "text_ids": ids, "text_mask": mask, "image_id": torch.tensor([0, 0, 1, 2])[:batch_size]}


def step(model, objectives, batch, seed=0):
    ctx = objectives.context(model, batch, torch.Generator().manual_seed(seed))
    return ctx, objectives.compute(ctx)


def params(model, objectives):
    return [(f"model.{n}", p) for n, p in model.named_parameters()] + [
        (f"objectives.{n}", p) for n, p in objectives.named_parameters()
    ]


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("pooling", list(POOLINGS))
@pytest.mark.parametrize("num_frames", [1, 4])
def test_all_objectives_train_every_parameter(pooling, num_frames):
    model, objectives = setup(config(pooling))
    _, out = step(model, objectives, make_batch(num_frames))
    expected = {f"loss/{name}" for term in TERMS for name in LOSSES[term]}
    assert {k for k in out if k.startswith("loss/")} == expected
    assert all(math.isfinite(v.item()) for v in out.values())
    out["loss"].backward()
    missing = [n for n, p in params(model, objectives) if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for _, p in params(model, objectives))
    assert all(p.grad.any() for _, p in params(model, objectives)), "a parameter got an all-zero gradient"


def test_all_objectives_with_the_momentum_queue():
    cfg = config(**{"itc.queue_size": 8})
    model = new_model(cfg)
    objectives = build_objectives(cfg.objectives, model.dims, SPECIAL, model=model)
    _, out = step(model, objectives, make_batch(4))
    out["loss"].backward()
    trainable = [(n, p) for n, p in params(model, objectives) if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    frozen = [n for n, p in params(model, objectives) if not p.requires_grad]
    assert frozen and all(n.startswith("objectives.itc.momentum.") for n in frozen)


def unused_by(term, model):
    """Model parts an objective alone does not read (so they rightly get no gradient)."""
    fusion = model.fusion
    poolers = [fusion.text_pooler, fusion.image_pooler]
    parts = {
        "itc": [fusion],  # uni-modal CLS only
        "mlm": [fusion.image_layers[-1], fusion.image_norm, *poolers],  # fused text tokens only
        "scl": poolers,  # fused CLS features, not the pooled joint
        "itm": [],
        "softmask": [],
    }[term]
    return {id(p) for part in parts for p in part.parameters()}


@pytest.mark.parametrize("term", TERMS)
def test_each_objective_alone_trains_what_it_uses(term):
    on = ("itm", "softmask") if term == "softmask" else (term,)
    model, objectives = setup(config(on=on))
    ctx, out = step(model, objectives, make_batch(4))
    assert {k for k in out if k.startswith("loss/")} == {f"loss/{n}" for t in on for n in LOSSES[t]}
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.any() for p in getattr(objectives, term).parameters())
    skip = unused_by(term, model)
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (id(p) not in skip), name


# ------------------------------------------------------------- toggles & cost
@pytest.mark.parametrize(
    "on,overrides,passes",
    [
        (("itc", "itm", "mlm", "scl"), {}, ["clean", "mlm", "masked_image", "masked_text"]),  # +1 ITM negatives
        (("itc", "itm", "mlm", "scl"), {"mlm.reuse_mlsc_pass": True}, ["clean", "masked_image", "masked_text"]),
        (("itc", "itm", "mlm"), {}, ["clean", "mlm"]),
        (("itc", "itm", "mlm", "scl"), {"scl.mlsc": False}, ["clean", "mlm", "masked_image", "masked_text"]),
        (("scl",), {}, ["masked_image", "masked_text"]),
        (("scl",), {"scl.mlsc": False}, ["masked_image", "masked_text"]),  # MVSC's cross-pass target
        (("scl",), {"scl.target": "clean_pass"}, ["masked_image", "clean", "masked_text"]),
        (("scl",), {"scl.target": "clean_pass", "scl.mlsc": False}, ["masked_image", "clean"]),
        (("itc",), {}, []),
        (("mlm",), {"mlm.reuse_mlsc_pass": True}, ["mlm"]),  # no MLSC to reuse: its own pass
    ],
)
def test_toggles_change_the_fusion_passes(on, overrides, passes):
    model, objectives = setup(config(on=on, **overrides))
    with torch.no_grad():
        ctx, _ = step(model.eval(), objectives, make_batch())
    assert sorted(ctx.passes_run) == sorted(passes)
    assert ctx.fusion_passes == len(passes) + ("itm" in on)  # ITM fuses its 2B negatives apart


@pytest.mark.parametrize(
    "target,mvsc_target,mlsc_target",
    [("cross_pass", "masked_text", "masked_image"), ("clean_pass", "clean", "clean")],
)
def test_scl_contrasts_each_masked_pass_with_its_target_pass(target, mvsc_target, mlsc_target):
    model, objectives = setup(config(on=("scl",), **{"scl.target": target}))
    ctx, out = step(model.eval(), objectives, make_batch(4))
    tau = objectives.scl.temperature
    mvsc = completion_loss(
        ctx.pass_("masked_image")["fused_frame_cls"], ctx.pass_(mvsc_target)["fused_frame_cls"], tau
    )[0]
    mlsc = completion_loss(ctx.pass_("masked_text")["fused_text_cls"], ctx.pass_(mlsc_target)["fused_text_cls"], tau)[0]
    assert out["loss/mvsc"].item() == pytest.approx(mvsc.item(), abs=1e-6)
    assert out["loss/mlsc"].item() == pytest.approx(mlsc.item(), abs=1e-6)
    masked = ctx.pass_("masked_text")["text_ids"] == SPECIAL["mask"]  # MLSC alone: chosen tokens -> [MASK]
    real = (make_batch(4)["text_ids"] > SPECIAL["mask"]).sum(dim=1)
    assert torch.equal(masked.sum(dim=1), torch.round(real * 0.4).clamp_min(1).long())


def test_mlm_reusing_the_mlsc_pass_predicts_its_masked_tokens():
    model, objectives = setup(config(on=("mlm", "scl"), **{"mlm.reuse_mlsc_pass": True}))
    ctx, out = step(model.eval(), objectives, make_batch())
    fused = ctx.pass_("masked_text")
    chosen = fused["mlm_labels"] != IGNORE
    real = (make_batch()["text_ids"] > SPECIAL["mask"]).sum(dim=1)
    assert torch.equal(chosen.sum(dim=1), torch.round(real * 0.4).clamp_min(1).long())  # MLSC's ratio
    loss, _ = masked_lm_loss(objectives.mlm.head, fused["fused_text"], fused["mlm_labels"])
    assert out["loss/mlm"].item() == pytest.approx(loss.item(), abs=1e-6)


def test_softmask_adds_one_pass_and_a_positive():
    model, objectives = setup(config(on=("itm", "softmask")))
    ctx, out = step(model, objectives, make_batch())
    assert ctx.fusion_passes == 3  # clean, ITM negatives, the masked pair
    assert 0 < out["softmask_itm/masked"].item() < 1


def test_softmask_modes_mask_what_they_promise():
    batch = make_batch()
    for mode, ratio in (("hard", 0.25), ("random", 0.5)):
        cfg = config(on=("itm", "softmask"), **{"softmask.mode": mode, "softmask.hard_ratio": ratio})
        model, objectives = setup(cfg)
        _, out = step(model, objectives, batch)
        assert out["softmask_itm/masked"].item() == pytest.approx(round(ratio * N) / N)


def test_the_masked_pair_is_an_itm_positive_of_the_masked_image():
    batch = make_batch()
    losses = {}
    for ratio in (0.0, 0.5):
        cfg = config(on=("itm", "softmask"), **{"softmask.mode": "hard", "softmask.hard_ratio": ratio})
        model, objectives = setup(cfg)
        ctx, out = step(model.eval(), objectives, batch)
        clean = objectives.itm.logits(ctx.pass_("clean")["joint"])
        as_positive = F.cross_entropy(clean, torch.ones(4, dtype=torch.long))
        losses[ratio] = (out["loss/softmask_itm"].item(), as_positive.item())
    assert losses[0.0][0] == pytest.approx(losses[0.0][1], abs=1e-6)  # nothing masked: the clean positive
    assert losses[0.5][0] != pytest.approx(losses[0.5][1], abs=1e-4)  # half the patches zeroed


def test_the_last_fusion_layer_has_zero_word_cam_so_the_config_refuses_it():
    # the degenerate case: built past the config check, the last layer's word cam is all zero
    cfg = config(on=("itm", "softmask"))
    cfg.objectives.softmask.layer = -1
    model, objectives = setup(cfg)
    _, out = step(model, objectives, make_batch())
    assert out["softmask_itm/masked"].item() == 0.0
    for layer, layers in ((-1, 2), (1, 2), (0, 1)):  # SoftMask's own check, told the fusion depth
        cfg = config(on=("itm", "softmask"), **{"softmask.layer": layer}, fusion_layers=layers)
        message = rf"^objectives\.softmask\.layer: {layer} is the last of model\.fusion\.layers={layers}"
        with pytest.raises(ConfigError, match=message):
            build_objectives(cfg.objectives, new_model(cfg).dims, SPECIAL, fusion_layers=layers)
        with pytest.raises(ConfigError, match=message):
            preflight.check(cfg)
    cfg = config(on=("itm", "softmask"), **{"softmask.layer": -1, "softmask.mode": "random"})  # no cam: allowed
    assert preflight.problems(cfg) == []


def test_weights_scale_and_sum():
    cfg = config(on=("itc", "itm", "scl"), **{"itc.weight": 0.5, "scl.weight": 2.0})
    model, objectives = setup(cfg)
    _, out = step(model.eval(), objectives, make_batch())
    weights = {"itc": 0.5, "itm": 1.0, "mvsc": 2.0, "mlsc": 2.0}
    for name, weight in weights.items():
        assert out[f"loss_weighted/{name}"].item() == pytest.approx(weight * out[f"loss/{name}"].item())
    assert out["loss"].item() == pytest.approx(sum(out[f"loss_weighted/{n}"].item() for n in weights))


def test_a_seed_fixes_every_random_choice():
    model, objectives = setup(config(**{"softmask.mode": "random"}))
    model.eval()  # BERT dropout draws from the global RNG
    first = step(model, objectives, make_batch(), seed=3)[1]
    second = step(model, objectives, make_batch(), seed=3)[1]
    other = step(model, objectives, make_batch(), seed=4)[1]
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_mae_drop_keeps_the_same_patches_in_every_frame():
    """Identical frames, frames encoded independently: every frame's kept tokens must match."""
    model, objectives = setup(config("mean", on=("scl",), **{"scl.image_mask_ratio": 0.75}))
    batch = make_batch(num_frames=1)
    batch["image"] = batch["image"].expand(-1, 3, -1, -1, -1).contiguous()
    ctx = objectives.context(model.eval(), batch, torch.Generator().manual_seed(0))
    kept = round(0.25 * N)
    with torch.no_grad():
        fused = MaskedImagePass(0.75)(ctx)
        assert fused["keep_patches"].shape == (4, kept)
        tokens = model.encode_image(batch["image"], keep_patches=fused["keep_patches"])["image_tokens"]
    assert tokens.shape[1] == 3 * (1 + kept)
    frames = tokens.unflatten(1, (3, 1 + kept))
    assert torch.allclose(frames[:, 0], frames[:, 1], atol=1e-5)
    assert torch.allclose(frames[:, 0], frames[:, 2], atol=1e-5)


def test_itc_queue_matches_hand_infonce_and_fills():
    cfg = config(on=("itc",), **{"itc.queue_size": 6, "itc.distill_alpha": 0.0})
    with pytest.raises(ValueError, match="model=model"):
        build_objectives(cfg.objectives, {"vision_width": 4, "text_width": 4, "fusion_width": 4}, SPECIAL)
    model = new_model(cfg).eval()
    objectives = build_objectives(cfg.objectives, model.dims, SPECIAL, model=model).eval()
    itc = objectives.itc
    batch = make_batch()
    queued_text, queued_image = itc.momentum.text_queue.clone(), itc.momentum.image_queue.clone()
    _, out = step(model, objectives, batch)
    # first step: the momentum copy still equals the model, so its batch features are the online ones
    with torch.no_grad():
        image = itc.image_embed(model.encode_image(batch["image"])["image_cls"])
        text = itc.text_embed(model.encode_text(batch["text_ids"], batch["text_mask"])["text_cls"])
        ids = torch.cat([batch["image_id"], torch.full((6,), -1)])
        targets = (batch["image_id"][:, None] == ids[None]).float()
        targets = targets / targets.sum(1, keepdim=True)

        def cross_entropy(logits):
            return -(targets * logits.log_softmax(1)).sum(1).mean()

        i2t = cross_entropy(image @ torch.cat([text, queued_text]).t() / itc.temperature)
        t2i = cross_entropy(text @ torch.cat([image, queued_image]).t() / itc.temperature)
    assert out["loss/itc"].item() == pytest.approx(((i2t + t2i) / 2).item(), abs=1e-5)
    assert itc.momentum.pointer.item() == 4 and itc.momentum.id_queue[:4].tolist() == [0, 0, 1, 2]
    assert torch.allclose(itc.momentum.text_queue[:4], text, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in itc.momentum.parameters())
    assert itc.image_proj.weight.grad is not None
    step(model, objectives, batch)
    assert itc.momentum.pointer.item() == 2  # 8 entries in 6 slots
