"""Objectives' math on hand-made tensors: exact values, masking statistics, Grad-CAM, builder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.config import load_config
from workbench.errors import ConfigError
from workbench.objectives import build_objectives, is_on, special_ids_of
from workbench.objectives.context import StepContext, special_token_mask
from workbench.objectives.contrastive import focal_info_nce, positive_targets, symmetric_info_nce
from workbench.objectives.itc import ITC, temperature_range
from workbench.objectives.itm import negative_weights, sample_negatives
from workbench.objectives.masking import IGNORE, exact_positions, keep_patch_indices, kept_patch_count, mask_tokens
from workbench.objectives.mlm import masked_lm_loss
from workbench.objectives.momentum import MomentumQueue
from workbench.objectives.projection import GlobalBatchNorm, Projection
from workbench.objectives.scl import completion_loss
from workbench.objectives.softmask import (
    apply_soft_mask,
    grad_cam,
    hard_mask,
    itm_grad_cam,
    pick_words,
    random_mask,
    word_cam,
)

SPECIAL = {"pad": 0, "cls": 2, "sep": 3, "mask": 4}
DIMS = {"vision_width": 8, "text_width": 6, "fusion_width": 4, "vocab_size": 30}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ InfoNCE / focal
def test_focal_gamma_zero_is_plain_cross_entropy():
    logits = torch.randn(5, 7, generator=gen())
    labels = torch.tensor([0, 3, 6, 2, 2])
    assert torch.allclose(focal_info_nce(logits, labels, 0.0), F.cross_entropy(logits, labels), atol=1e-6)
    soft = torch.softmax(torch.randn(5, 7, generator=gen(1)), dim=1)
    assert torch.allclose(focal_info_nce(logits, soft, 0.0), F.cross_entropy(logits, soft), atol=1e-6)


def test_focal_matches_hand_formula_on_3x3():
    # identity logits: every row's target probability is p = e / (e + 2)
    p = math.e / (math.e + 2)
    expected = (1 - p) ** 2 * -math.log(p)
    assert focal_info_nce(torch.eye(3), torch.arange(3), 2.0).item() == pytest.approx(expected, abs=1e-6)
    # an uneven matrix, written out term by term
    logits = [[2.0, 0.0, 1.0], [0.5, -1.0, 0.0], [0.0, 3.0, 1.0]]
    targets = [0, 2, 1]
    gamma, total = 0.5, 0.0
    for row, target in zip(logits, targets, strict=True):
        p = math.exp(row[target]) / sum(math.exp(v) for v in row)
        total += -((1 - p) ** gamma) * math.log(p)
    got = focal_info_nce(torch.tensor(logits), torch.tensor(targets), gamma)
    assert got.item() == pytest.approx(total / 3, abs=1e-6)


def test_focal_gradient_is_finite_when_a_target_is_certain():
    logits = torch.tensor([[80.0, 0.0], [0.0, 80.0]], requires_grad=True)
    focal_info_nce(logits, torch.arange(2), 0.5).backward()
    assert torch.isfinite(logits.grad).all()


def test_symmetric_info_nce_known_value_and_frame_average():
    temperature = 0.5
    features = torch.eye(3)  # identical L2-normalised features: logits = I / temperature
    expected = math.log(1 + 2 * math.exp(-1 / temperature))
    assert symmetric_info_nce(features, features, temperature).item() == pytest.approx(expected, abs=1e-6)
    other = F.normalize(torch.randn(3, 3, generator=gen()), dim=-1)
    stacked = symmetric_info_nce(torch.stack([features, other]), torch.stack([features, other]), temperature)
    one_by_one = (expected + symmetric_info_nce(other, other, temperature).item()) / 2
    assert stacked.item() == pytest.approx(one_by_one, abs=1e-6)


def test_completion_loss_normalises_and_detaches_the_target():
    recovered = torch.eye(3).mul(5.0).requires_grad_()  # normalised inside
    target = torch.eye(3).mul(2.0).requires_grad_()
    loss, accuracy = completion_loss(recovered, target, 0.5)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)
    assert accuracy.item() == 1.0
    loss.backward()
    assert target.grad is None and recovered.grad is not None
    frames = torch.randn(4, 2, 5, generator=gen())  # [B, T, D]: contrasted frame by frame
    per_frame = [completion_loss(frames[:, t], frames[:, t], 0.1)[0] for t in range(2)]
    assert completion_loss(frames, frames, 0.1)[0].item() == pytest.approx(sum(per_frame).item() / 2, abs=1e-6)


def test_same_image_id_pairs_share_the_target():
    targets = positive_targets(torch.tensor([7, 7, 3]), torch.tensor([7, 7, 3]))
    assert torch.equal(targets, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))


def test_pairs_with_the_same_caption_string_share_the_target():
    # rows 0 and 1 are two images captioned by the same string (caption id 5)
    targets = positive_targets(
        torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([5, 5, 6]), torch.tensor([5, 5, 6])
    )
    assert torch.equal(targets, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    # caption ids covering only the batch columns, not a queue behind them
    queue = positive_targets(
        torch.tensor([0, 1]), torch.tensor([0, 1, 1, 9]), torch.tensor([5, 5]), torch.tensor([5, 5])
    )
    assert torch.equal(queue, torch.tensor([[0.5, 0.5, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3, 0.0]]))


def test_itc_soft_targets_over_two_images_sharing_a_caption():
    cfg = load_config(None, {"objectives.itc.embed_dim": 4}).objectives.itc
    itc = ITC(8, 6, cfg)
    image_cls, text_cls = torch.randn(3, 8, generator=gen()), torch.randn(3, 6, generator=gen(1))
    batch = {
        "text_ids": torch.zeros(3, 5, dtype=torch.long),
        "image_id": torch.tensor([0, 1, 2]),
        "caption_id": torch.tensor([7, 7, 3]),
    }
    out = itc(fake_ctx(batch, {"image_cls": image_cls}, {"text_cls": text_cls}))
    logits = F.normalize(itc.image_proj(image_cls), dim=-1) @ F.normalize(itc.text_proj(text_cls), dim=-1).t() / 0.07
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    expected = (F.cross_entropy(logits, soft) + F.cross_entropy(logits.t(), soft)) / 2
    assert out["itc_loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    plain = itc(
        fake_ctx(
            {k: v for k, v in batch.items() if k != "caption_id"}, {"image_cls": image_cls}, {"text_cls": text_cls}
        )
    )
    assert plain["itc_loss"].item() != pytest.approx(expected.item(), abs=1e-3)
    # ITM never draws the other image of a shared caption as a negative
    from workbench.objectives.itc import batch_positive_mask

    weights = negative_weights(torch.zeros(3, 3), batch_positive_mask(batch))
    assert weights[0, 1] == 0 and weights[1, 0] == 0 and weights[0, 2] > 0


def test_pretraining_batches_number_caption_strings(shapes_tiny):
    from workbench.data import PretrainStream, load_tokenizer

    cfg = load_config(None, {"data.root": str(shapes_tiny), "data.shapes_size": "tiny", "train.batch_size": 64})
    stream = PretrainStream(cfg, load_tokenizer(cfg.data), seed=0)
    dataset = stream.datasets["image"]
    batch = next(stream.batches())
    texts = [dataset.entries[i]["caption"] for _, i, _ in stream.step_keys(0)]
    assert batch["caption_id"].shape == (64,)
    shared = [(a, b) for a in range(64) for b in range(a) if batch["caption_id"][a] == batch["caption_id"][b]]
    assert shared  # tiny ShapesWorld's generic captions repeat within a batch of 64
    for a, b in shared:
        assert set(texts[a]) & set(texts[b])


# ------------------------------------------------------------------------- ITC
def fake_ctx(batch, image=None, text=None, **kwargs) -> StepContext:
    """A context whose clean encodings are given (no model needed)."""
    ctx = StepContext(None, batch, {}, special_ids=SPECIAL, **kwargs)
    if image is not None:
        ctx.memo("image", lambda: image)
    if text is not None:
        ctx.memo("text", lambda: text)
    return ctx


def test_itc_module_equals_hand_infonce_and_clamps_temperature():
    cfg = load_config(None, {"objectives.itc.embed_dim": 4}).objectives.itc
    itc = ITC(8, 6, cfg)
    image_cls, text_cls = torch.randn(3, 8, generator=gen()), torch.randn(3, 6, generator=gen(1))
    batch = {"text_ids": torch.zeros(3, 5, dtype=torch.long), "image_id": torch.tensor([0, 1, 2])}
    out = itc(fake_ctx(batch, {"image_cls": image_cls}, {"text_cls": text_cls}))
    logits = F.normalize(itc.image_proj(image_cls), dim=-1) @ F.normalize(itc.text_proj(text_cls), dim=-1).t() / 0.07
    labels = torch.arange(3)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert out["itc_loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    low, high = temperature_range()
    assert (low, high) == (0.001, 0.5)
    with torch.no_grad():
        itc.temperature.fill_(3.0)
    itc(fake_ctx(batch, {"image_cls": image_cls}, {"text_cls": text_cls}))
    assert itc.temperature.item() == pytest.approx(0.5)


def test_global_batch_norm_is_batchnorm1d_without_affine_in_one_process():
    x = torch.randn(6, 4, generator=gen()) * 3 + 5
    ours, reference = GlobalBatchNorm(4), torch.nn.BatchNorm1d(4, affine=False)
    assert torch.allclose(ours(x), reference(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, reference.running_var, atol=1e-5)
    ours.eval(), reference.eval()
    assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_projection_without_batch_norm_keeps_the_linear_checkpoint_keys():
    assert set(Projection(8, 4).state_dict()) == {"weight", "bias"}
    assert set(Projection(8, 4, batch_norm=True).state_dict()) == {
        "weight",
        "bias",
        "norm.running_mean",
        "norm.running_var",
    }


@pytest.mark.parametrize("batch_norm", [False, True])
def test_itc_batch_norm_removes_the_shared_component_of_collapsed_features(batch_norm):
    """Features = a large shared vector + a one-hot signature, as from random encoders.

    Plain: every pair has cosine ≈ 1, so the loss is log B. Batch-normed: each dimension
    is standardised over the batch, leaving the signatures: the loss is InfoNCE on the
    hand-standardised one-hot matrix.
    """
    rows = 4
    cfg = load_config(None, {"objectives.itc.embed_dim": rows, "objectives.itc.batch_norm": batch_norm}).objectives.itc
    itc = ITC(rows, rows, cfg)
    with torch.no_grad():
        for proj in (itc.image_proj, itc.text_proj):
            proj.weight.copy_(torch.eye(rows)), proj.bias.zero_()
    features = 100.0 + torch.eye(rows)
    batch = {"text_ids": torch.zeros(rows, 3, dtype=torch.long)}
    loss = itc(fake_ctx(batch, {"image_cls": features}, {"text_cls": features}))["itc_loss"].item()
    if not batch_norm:
        assert loss == pytest.approx(math.log(rows), abs=1e-3)
        return
    share = 1 / rows  # each column: one 1 and rows-1 zeros
    standardised = (torch.eye(rows) - share) / math.sqrt(share * (1 - share) + 1e-5)
    embed = F.normalize(standardised, dim=-1)
    expected = F.cross_entropy(embed @ embed.t() / 0.07, torch.arange(rows)).item()
    assert loss == pytest.approx(expected, abs=1e-4)
    assert loss < math.log(rows) - 1


# ------------------------------------------------------------------------- MLM
def caption_batch(rows: int, length: int, vocab: int, seed: int = 0):
    """[CLS] words [SEP] [PAD]* with random lengths."""
    g = gen(seed)
    ids = torch.randint(5, vocab, (rows, length), generator=g)
    lengths = torch.randint(2, length + 1, (rows,), generator=g)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[:, 0] = SPECIAL["cls"]
    ids[torch.arange(rows), lengths - 1] = SPECIAL["sep"]
    ids[mask == 0] = SPECIAL["pad"]
    return ids, mask


def test_mlm_masking_ratio_split_and_specials():
    vocab = 1000
    ids, mask = caption_batch(4000, 30, vocab)
    special = special_token_mask(ids, mask, SPECIAL)
    corrupted, labels = mask_tokens(ids, special, 0.15, gen(1), SPECIAL["mask"], vocab)
    chosen = labels != IGNORE
    assert not chosen[special].any() and torch.equal(corrupted[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(corrupted[~chosen], ids[~chosen])  # nothing else changes
    maskable = (~special).sum().item()
    assert chosen.sum().item() / maskable == pytest.approx(0.15, abs=0.005)  # ~20 sigma of n~54k
    n = chosen.sum().item()
    to_mask = (corrupted[chosen] == SPECIAL["mask"]).float().mean().item()
    kept = (corrupted[chosen] == ids[chosen]).float().mean().item()
    assert to_mask == pytest.approx(0.8, abs=0.015)
    assert kept == pytest.approx(0.1 + 0.1 / vocab, abs=0.01)
    assert 1 - to_mask - kept == pytest.approx(0.1, abs=0.01)
    assert n > 0
    again, _ = mask_tokens(ids, special, 0.15, gen(1), SPECIAL["mask"], vocab)
    assert torch.equal(again, corrupted)  # a seeded generator is deterministic


def test_exact_positions_masks_a_fixed_count_of_real_tokens():
    ids, mask = caption_batch(200, 12, 50)
    special = special_token_mask(ids, mask, SPECIAL)
    chosen = exact_positions(~special, 0.4, gen())
    real = (~special).sum(dim=1)
    expected = torch.where(real > 0, torch.round(real * 0.4).clamp_min(1), torch.zeros_like(real))
    assert torch.equal(chosen.sum(dim=1), expected.long())
    assert not chosen[special].any()


def test_masked_lm_loss_without_masked_tokens_is_zero_and_differentiable():
    head = torch.nn.Linear(4, 10)
    fused = torch.randn(2, 3, 4, requires_grad=True)
    loss, _ = masked_lm_loss(head, fused, torch.full((2, 3), IGNORE))
    assert loss.item() == 0.0
    loss.backward()
    labels = torch.full((2, 3), IGNORE)
    labels[1, 2] = 7
    loss, _ = masked_lm_loss(head, fused, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(head(fused[1, 2])[None], torch.tensor([7])).item())


# -------------------------------------------------------------------- MAE drop
@pytest.mark.parametrize("ratio,patches", [(0.8, 64), (0.75, 16), (0.5, 9), (0.99, 16)])
def test_keep_patch_indices_keeps_round_of_the_rest(ratio, patches):
    keep = keep_patch_indices(5, patches, ratio, gen(), torch.device("cpu"))
    kept = max(1, round((1 - ratio) * patches))
    assert kept_patch_count(patches, ratio) == kept
    assert keep.shape == (5, kept)
    assert (keep.diff(dim=1) > 0).all()  # sorted, no repeats
    assert keep.min() >= 0 and keep.max() < patches


# ------------------------------------------------------------------------- ITM
def test_negatives_are_never_positives_and_follow_the_similarity():
    ids = torch.tensor([0, 0, 1, 2, 3])  # rows 0 and 1 show the same image
    g = gen()
    for _ in range(50):
        negative = sample_negatives(None, ids, g)
        assert not (ids[negative] == ids).any()
    similarity = torch.zeros(5, 5)
    similarity[:, 4] = 20.0  # everyone looks like row 4 ...
    draws = torch.stack([sample_negatives(similarity, ids, g) for _ in range(50)])
    assert (draws[:, :4] == 4).float().mean() > 0.95  # ... so hard negatives pick it
    assert not (draws[:, 4] == 4).any()  # except row 4 itself
    weights = negative_weights(similarity, ids)
    assert torch.allclose(weights.sum(dim=1) > 0, torch.ones(5, dtype=torch.bool))
    assert (weights[0, :2] == 0).all()


def test_hard_mix_draws_from_softmax_and_uniform_in_the_given_shares():
    ids = torch.tensor([0, 0, 1, 2])  # rows 0 and 1 show the same image
    similarity = torch.tensor([[0.0, 0.0, 2.0, 0.0]] * 4)
    weights = negative_weights(similarity, ids, hard_mix=0.25)
    # row 0: non-positives are columns 2 and 3; softmax over them e^2 : e^0, uniform 1/2 : 1/2
    hard = torch.tensor([math.e**2, 1.0]) / (math.e**2 + 1)
    assert torch.allclose(weights[0], torch.cat([torch.zeros(2), 0.25 * hard + 0.75 * torch.tensor([0.5, 0.5])]))
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))
    # row 2 (image 1): its non-positives are 0, 1 and 3 with equal similarity: uniform either way
    assert torch.allclose(weights[2], torch.tensor([1 / 3, 1 / 3, 0.0, 1 / 3]))
    assert torch.equal(negative_weights(similarity, ids, hard_mix=1.0), negative_weights(similarity, ids))
    uniform = negative_weights(similarity, ids, hard_mix=0.0)
    assert torch.allclose(uniform, negative_weights(None, ids) / negative_weights(None, ids).sum(dim=1, keepdim=True))
    with pytest.raises(ConfigError, match="objectives.itm.hard_mix=0.5 .* objectives.itm.negatives=random"):
        build_objectives(objectives_cfg(**{"itm.negatives": "random", "itm.hard_mix": 0.5}), DIMS, SPECIAL)
    mixed = build_objectives(objectives_cfg(**{"itm.negatives": "hard", "itm.hard_mix": 0.5}), DIMS, SPECIAL)
    assert mixed.itm.hard_mix == 0.5


def test_negatives_fall_back_when_the_whole_batch_is_one_image():
    weights = negative_weights(None, torch.tensor([5, 5, 5]))
    assert torch.equal(weights, 1 - torch.eye(3))
    with pytest.raises(ConfigError, match="train.batch_size"):
        negative_weights(None, torch.tensor([1]))


# -------------------------------------------------------------------- Grad-CAM
def test_grad_cam_is_mean_over_heads_of_attention_times_positive_gradient():
    attn = torch.tensor([[[[0.2, 0.8]], [[0.6, 0.4]]]])  # [B=1, H=2, L=1, S=2]
    grad = torch.tensor([[[[1.0, -1.0]], [[0.5, 2.0]]]])
    expected = torch.tensor([[[(0.2 * 1.0 + 0.6 * 0.5) / 2, (0 + 0.4 * 2.0) / 2]]])
    assert torch.allclose(grad_cam(attn, grad), expected)


def test_word_cam_finds_the_one_patch_the_score_depends_on():
    batch_size, heads, length, tokens = 3, 2, 5, 10
    patch_positions = torch.tensor([1, 2, 3, 4, 6, 7, 8, 9])  # two frames: CLS at 0 and 5
    decisive = torch.tensor([7, 2, 9])  # the one patch each sample's score reads
    scores = torch.randn(batch_size, heads, length, tokens, generator=gen(), requires_grad=True)
    attn = scores.softmax(dim=-1)
    words = torch.tensor([1, 3, 2])
    rows = torch.arange(batch_size)
    joint = (attn[rows, :, words, decisive] * 5.0).sum(dim=1, keepdim=True)  # [B, 1]
    fused = {"cross_attn": [attn], "joint": joint}
    cam = word_cam(itm_grad_cam(fused, lambda j: j[:, 0], layer=0), words, patch_positions)
    assert cam.shape == (batch_size, patch_positions.numel())
    assert cam.min() >= 0 and cam.max() <= 1 and not cam.requires_grad
    assert torch.equal(patch_positions[cam.argmax(dim=1)], decisive)
    assert torch.allclose(cam.max(dim=1).values, torch.ones(batch_size))


def test_pick_words_only_picks_real_words():
    ids, mask = caption_batch(300, 10, 50)
    ids[0, 2:] = SPECIAL["pad"]
    ids[0, 1], mask[0, 2:] = SPECIAL["sep"], 0  # caption 0: "[CLS] [SEP]" has no word
    special = special_token_mask(ids, mask, SPECIAL)
    words = pick_words(special, gen())
    has_word = (~special).any(dim=1)
    assert words[0] == 0 and (words[~has_word] == 0).all()
    assert has_word.sum() > 250 and not special[has_word.nonzero()[:, 0], words[has_word]].any()


def test_soft_hard_and_random_masks():
    tokens = torch.randn(2, 7, 3, generator=gen())
    patch_positions = torch.tensor([1, 2, 3, 5, 6])  # CLS at 0 and 4
    cam = torch.tensor([[0.0, 0.5, 1.0, 0.25, 0.75], [1.0, 0.0, 0.2, 0.9, 0.4]])
    soft = apply_soft_mask(tokens, cam, patch_positions)
    assert torch.allclose(soft[:, patch_positions], tokens[:, patch_positions] * (1 - cam)[..., None])
    assert torch.equal(soft[:, [0, 4]], tokens[:, [0, 4]])
    hard = hard_mask(cam, 0.4)  # round(0.4 * 5) = 2 patches: the two largest
    assert torch.equal(hard, torch.tensor([[0, 0, 1, 0, 1], [1, 0, 0, 1, 0]], dtype=torch.bool))
    zeroed = apply_soft_mask(tokens, hard.float(), patch_positions)
    assert (zeroed[:, patch_positions][hard] == 0).all()
    assert torch.equal(zeroed[:, patch_positions][~hard], tokens[:, patch_positions][~hard])
    chosen = random_mask(200, 5, 2, gen(), torch.device("cpu"))
    assert (chosen.sum(dim=1) == 2).all()
    assert chosen.float().mean(dim=0).sub(0.4).abs().max() < 0.12  # uniform over patches
    assert torch.equal(chosen, random_mask(200, 5, 2, gen(), torch.device("cpu")))


# --------------------------------------------------------------------- builder
def objectives_cfg(**overrides):
    return load_config(None, {f"objectives.{k}": v for k, v in overrides.items()}).objectives


@pytest.mark.parametrize(
    "overrides,absent",
    [
        ({"itc.enabled": False}, "itc"),
        ({"itc.weight": 0.0}, "itc"),
        ({"itm.weight": 0}, "itm"),
        ({"mlm.enabled": False}, "mlm"),
        ({"scl.enabled": False}, "scl"),
        ({"scl.mvsc": False, "scl.mlsc": False}, "scl"),
        ({"softmask.mode": "off", "softmask.enabled": True}, "softmask"),
    ],
)
@pytest.mark.filterwarnings("ignore:objectives.itm.negatives=hard without ITC")
def test_a_disabled_term_is_not_built(overrides, absent):
    cfg = objectives_cfg(**overrides)
    objectives = build_objectives(cfg, DIMS, SPECIAL)
    assert not is_on(cfg, absent)
    assert absent not in objectives.built and not hasattr(objectives, absent)
    assert not any(name.startswith(f"{absent}.") for name, _ in objectives.named_parameters())


def test_all_terms_built_with_their_heads():
    objectives = build_objectives(objectives_cfg(**{"softmask.enabled": True}), DIMS, SPECIAL)
    assert objectives.built == ("itc", "itm", "mlm", "scl", "softmask")
    assert objectives.loss_names == ("itc", "itm", "mlm", "mvsc", "mlsc", "softmask_itm")
    assert objectives.itm.head.in_features == 2 * DIMS["fusion_width"]
    assert objectives.mlm.head[-1].out_features == DIMS["vocab_size"]
    assert objectives.itc.image_proj.in_features == DIMS["vision_width"]


def test_softmask_without_itm_names_both_keys():
    cfg = objectives_cfg(**{"softmask.enabled": True, "itm.enabled": False})
    with pytest.raises(ConfigError, match=r"objectives\.softmask\.enabled.*objectives\.itm\.enabled"):
        build_objectives(cfg, DIMS, SPECIAL)


def test_hard_negatives_without_itc_warn_and_mask_id_is_required():
    with pytest.warns(UserWarning, match="negatives=hard without ITC"):
        build_objectives(objectives_cfg(**{"itc.enabled": False}), DIMS, SPECIAL)
    with pytest.raises(ValueError, match="'mask'"):
        build_objectives(objectives_cfg(), DIMS, {"pad": 0})


# ----------------------------------------------------------- momentum + queue
def test_momentum_queue_ema_and_fifo():
    online = torch.nn.Linear(2, 3)
    queue = MomentumQueue(online, torch.nn.Linear(3, 4), torch.nn.Linear(3, 4), queue_size=5, momentum=0.9)
    before = queue.model.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    queue.update([online, queue.image_proj, queue.text_proj])
    assert torch.allclose(queue.model.weight, 0.9 * before + 0.1 * online.weight)
    assert not any(p.requires_grad for p in queue.parameters())
    first, second = torch.randn(3, 4, generator=gen()), torch.randn(3, 4, generator=gen(1))
    queue.enqueue(first, first, torch.tensor([10, 11, 12]))
    queue.enqueue(second, second, torch.tensor([20, 21, 22]))
    assert queue.pointer.item() == 1  # 6 entries written into 5 slots: wrapped once
    assert queue.id_queue.tolist() == [22, 11, 12, 20, 21]
    assert torch.equal(queue.image_queue[[3, 4, 0]], second)


def test_special_ids_come_from_the_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "red": 5}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    assert special_ids_of(tokenizer) == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
