"""Downstream evaluation: retrieval metrics and attention share by hand; every task end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_config import TINY_MODEL

from workbench.config import load_config
from workbench.errors import ConfigError
from workbench.evaluate import TASKS, evaluate_all
from workbench.evaluate.attention import cross_attention_maps, in_object_share, named_object
from workbench.evaluate.finetune import finetuned
from workbench.evaluate.rerank import rerank_rows, score_all_pairs
from workbench.evaluate.retrieval import built_objective, retrieval_scores
from workbench.evaluate.retrieval_metrics import retrieval_metrics
from workbench.evaluate.ve import VE
from workbench.tasks import EVAL_TASKS

# --------------------------------------------------------------- retrieval metrics
# 3 images x 15 captions; captions 0-4 describe image 0, 5-9 image 1, 10-14 image 2.
TXT2IMG = [0] * 5 + [1] * 5 + [2] * 5
SCORES_WITH_TIES = np.array(
    [
        # image 0: its best caption (0) scores 9, no wrong caption reaches 9 -> TR rank 0
        [9, 1, 1, 1, 5, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0],
        # image 1: best own caption scores 5; wrong captions 0,1,2 score 7 and 3,4 tie at 5
        # -> TR rank 5 (a tie counts against the model; optimistic would say 3)
        [7, 7, 7, 5, 5, 5, 4, 4, 4, 4, 0, 0, 0, 0, 0],
        # image 2: every caption ties -> TR rank 10 (all 10 wrong captions count)
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=np.float32,
)
# IR ranks by hand (column j, count wrong images scoring >= the true one):
#   c0 [9,7,0] -> 0; c1..c3 [1,7,0] -> 1; c4 [5,5,0] tie -> 1; c5 [2,5,0] -> 0;
#   c6..c9 [2,4,0] -> 0; c10..c14 [0,0,0] all tie -> 2.
# TR ranks [0, 5, 10]: R@1 1/3, R@5 1/3, R@10 2/3.  IR: R@1 6/15, R@5 15/15, R@10 15/15.
EXPECTED_WITH_TIES = {
    "tr_r1": 100 / 3,
    "tr_r5": 100 / 3,
    "tr_r10": 200 / 3,
    "ir_r1": 40.0,
    "ir_r5": 100.0,
    "ir_r10": 100.0,
    "r_mean": 1120 / 18,
}


def test_retrieval_metrics_hand_computed_with_pessimistic_ties():
    metrics = retrieval_metrics(SCORES_WITH_TIES, TXT2IMG)
    assert metrics.keys() == EXPECTED_WITH_TIES.keys()
    for key, value in EXPECTED_WITH_TIES.items():
        assert metrics[key] == pytest.approx(value), key


def test_retrieval_metrics_accepts_torch_and_a_matching_img2txt():
    img2txt = [list(range(5)), list(range(5, 10)), list(range(10, 15))]
    metrics = retrieval_metrics(torch.from_numpy(SCORES_WITH_TIES), TXT2IMG, img2txt)
    assert metrics["r_mean"] == pytest.approx(1120 / 18)


def test_retrieval_metrics_rejects_inconsistent_maps():
    wrong = [list(range(4)), list(range(4, 10)), list(range(10, 15))]
    with pytest.raises(ValueError, match="disagree"):
        retrieval_metrics(SCORES_WITH_TIES, TXT2IMG, wrong)
    with pytest.raises(ValueError, match="expected"):
        retrieval_metrics(SCORES_WITH_TIES[:, :14], TXT2IMG)


def test_retrieval_metrics_nan_scores_rank_last():
    # one caption per image; image 1's true score is NaN -> it ranks below everything
    scores = np.array([[1.0, 0.0], [0.0, np.nan]])
    metrics = retrieval_metrics(scores, [0, 1])
    assert metrics["tr_r1"] == 50.0 and metrics["ir_r1"] == 50.0
    assert metrics["tr_r5"] == 100.0


def test_retrieval_metrics_separate_t2i_scores_drive_image_retrieval():
    scores_i2t = np.eye(2)  # perfect text retrieval
    scores_t2i = np.array([[0.0, 1.0], [1.0, 0.0]])  # every caption prefers the wrong image
    metrics = retrieval_metrics(scores_i2t, [0, 1], scores_t2i=scores_t2i)
    assert (metrics["tr_r1"], metrics["ir_r1"], metrics["ir_r5"]) == (100.0, 0.0, 100.0)


def test_a_caption_shared_by_two_images_is_right_for_both():
    # image 0: captions 0 "shared", 1 "zero"; image 1: captions 2 "shared", 3 "one"
    texts, txt2img = ["shared", "zero", "Shared ", "one"], [0, 0, 1, 1]
    scores = np.array(
        [
            [0.1, 0.2, 0.9, 0.0],  # image 0 prefers caption 2: another image's, but the same string
            [0.0, 0.0, 0.5, 0.8],  # image 1: its own caption 3 first
        ]
    )
    t2i = np.array([[0.2, 0.9], [0.9, 0.1], [0.1, 0.3], [0.0, 0.5]])  # caption 0 "shared" prefers image 1
    strict = retrieval_metrics(scores, txt2img, scores_t2i=t2i)
    shared = retrieval_metrics(scores, txt2img, scores_t2i=t2i, texts=texts)
    assert (strict["tr_r1"], strict["ir_r1"]) == (50.0, 75.0)  # image 0 and caption 0 count as misses
    assert (shared["tr_r1"], shared["ir_r1"]) == (100.0, 100.0)
    # a wrong string stays wrong: image 0 ranked above caption 3's own image
    t2i[3] = [0.9, 0.1]
    assert retrieval_metrics(scores, txt2img, scores_t2i=t2i, texts=texts)["ir_r1"] == 75.0


def test_chance_recall_of_a_random_ranking():
    from workbench.evaluate.references import chance_recall, retrieval_chance

    assert chance_recall(10, 1, 1) == pytest.approx(0.1)
    assert chance_recall(10, 2, 3) == pytest.approx(1 - (8 * 7 * 6) / (10 * 9 * 8))
    assert chance_recall(4, 1, 10) == 1.0
    # 2 images x 1 caption: a random ranking puts the right one first half the time ...
    assert retrieval_chance([0, 1], 2)["chance_tr_r1"] == pytest.approx(50.0)
    # ... and always when both captions are the same string (each is right for both images)
    both = retrieval_chance([0, 1], 2, ["a shape.", "a shape."])
    assert both["chance_tr_r1"] == both["chance_ir_r1"] == both["chance_r_mean"] == pytest.approx(100.0)


def test_majority_and_blind_baselines_on_hand_made_texts():
    from workbench.evaluate.references import label_references

    # the word says the label in half the items; the other half is the same text under both labels
    train = [("the red one", 0), ("the blue one", 1)] * 10 + [("is it so", 0), ("is it so", 1)] * 10 + [("is it so", 0)]
    test = [("the red one", 0), ("the blue one", 1), ("is it so", 0), ("is it so", 1)]
    correct = np.zeros((4, 2), dtype=bool)
    correct[np.arange(4), [label for _, label in test]] = True
    refs = label_references([t for t, _ in train], [y for _, y in train], [t for t, _ in test], correct)
    assert refs["chance_acc"] == 50.0
    assert refs["majority_acc"] == 50.0  # train majority is 0 (one extra), right on half the test
    assert refs["blind_acc"] == 75.0  # text decides the first two, a coin the last two
    # VQA-style: several right answers per item count in chance
    multi = np.array([[True, True, False, False], [True, False, False, False]])
    assert label_references(["q", "q"], [0, 0], ["q", "q"], multi)["chance_acc"] == pytest.approx(100 * 3 / 8)


# ------------------------------------------------------------------------- re-rank
SIMILARITY = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.2, 0.8]])  # [2 images, 3 texts]


def _pair_score(image_index, text_index):
    """A recognisable 'ITM logit': 10 * image + text."""
    return (10 * image_index + text_index).float()


def test_rerank_rows_scores_top_k_by_itm_and_fills_the_rest():
    calls = []

    def scorer(image_index, text_index):
        calls.append(len(image_index))
        return _pair_score(image_index, text_index)

    i2t = rerank_rows(SIMILARITY, 2, scorer, batch_size=3, rows_are_images=True)
    # image 1: text 2 first, then the 0.2 tie goes to the lower index (text 0)
    assert i2t.tolist() == [[0.0, -100.0, 2.0], [10.0, -100.0, 12.0]]
    assert calls == [3, 1]  # 4 pairs in chunks of the eval batch size
    t2i = rerank_rows(SIMILARITY.T, 1, _pair_score, batch_size=8, rows_are_images=False)
    assert t2i.tolist() == [[0.0, -100.0], [-100.0, 11.0], [-100.0, 12.0]]


def test_rerank_plus_similarity_adds_the_itc_score_of_each_candidate():
    i2t = rerank_rows(SIMILARITY, 2, _pair_score, batch_size=3, rows_are_images=True, plus_similarity=True)
    assert torch.allclose(i2t, torch.tensor([[0.9, -100.0, 2.5], [10.2, -100.0, 12.8]]))
    t2i = rerank_rows(SIMILARITY.T, 1, _pair_score, batch_size=8, rows_are_images=False, plus_similarity=True)
    assert torch.allclose(t2i, torch.tensor([[0.9, -100.0], [-100.0, 11.2], [-100.0, 12.8]]))


def test_score_all_pairs_and_k_beyond_the_candidates():
    assert score_all_pairs(2, 3, _pair_score, batch_size=4).tolist() == [[0, 1, 2], [10, 11, 12]]
    everything = rerank_rows(SIMILARITY, 99, _pair_score, batch_size=4, rows_are_images=True)
    assert everything.tolist() == [[0, 1, 2], [10, 11, 12]]


# ------------------------------------------------------------------ attention share
def test_in_object_share_counts_partly_covered_patches_by_area():
    patch_map = torch.tensor([[0.1, 0.2], [0.3, 0.4]])  # 2x2 patch grid over a 4x4 image
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0:2, 0:2] = True  # the whole top-left patch
    mask[0:2, 2] = True  # half of the top-right patch
    # inside fractions [[1, 0.5], [0, 0]] -> (0.1 * 1 + 0.2 * 0.5) / 1.0
    assert in_object_share(patch_map, mask).item() == pytest.approx(0.2)


def test_in_object_share_batched_and_empty_map():
    maps = torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 2:, :] = True  # bottom half of the image
    assert in_object_share(maps, mask).tolist() == [0.5, 0.0]


def test_named_object_needs_exactly_one_match():
    objects = [
        {"shape": "circle", "color": "red"},
        {"shape": "circle", "color": "blue"},
        {"shape": "square", "color": "red"},
    ]
    assert named_object("there is a large red circle.", objects) == 0
    assert named_object("a square that is red.", objects) == 2
    assert named_object("the circle is on the left.", objects) is None  # two circles
    assert named_object("the red circle is left of the red square.", objects) is None  # two objects
    assert named_object("there are three shapes.", objects) is None


# ------------------------------------------------------------- on tiny ShapesWorld
CPU = torch.device("cpu")
RETRIEVAL_KEYS = {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean"}


def _setup(root, *extra):
    from workbench.data import load_tokenizer
    from workbench.models import build_model
    from workbench.objectives import build_objectives

    overrides = TINY_MODEL + [
        f"data.root={root}",
        "data.shapes_size=tiny",
        "train.device=cpu",
        "eval.rerank_k=4",
        "eval.finetune_steps=2",
        "eval.finetune_batch_size=8",
        "eval.batch_size=16",
        *extra,
    ]
    cfg = load_config("base", overrides)
    tokenizer = load_tokenizer(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    special = {
        "pad": tokenizer.pad_token_id,
        "mask": tokenizer.mask_token_id,
        "cls": tokenizer.cls_token_id,
        "sep": tokenizer.sep_token_id,
    }
    objectives = build_objectives(cfg.objectives, model.dims, special, len(tokenizer))
    return cfg, tokenizer, model, objectives


def _snapshot(*modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def test_every_task_gives_documented_metrics_and_leaves_the_model_alone(shapes_tiny):
    assert set(TASKS) == set(EVAL_TASKS)
    cfg, tokenizer, model, objectives = _setup(shapes_tiny, f"eval.tasks=[{','.join(EVAL_TASKS)}]")
    model.train()
    objectives.train()
    before = _snapshot(model, objectives)
    seen = []
    metrics = evaluate_all(model, objectives, cfg, tokenizer, CPU, progress=seen.append)

    expected = {
        f"eval/{group}/{key}"
        for group in ("retrieval", "retrieval_itc", "video_retrieval", "video_retrieval_itc")
        for key in RETRIEVAL_KEYS
    }
    expected |= {f"eval/{group}/chance_{key}" for group in ("retrieval", "video_retrieval") for key in RETRIEVAL_KEYS}
    expected |= {
        f"eval/{task}/{kind}acc" for task in ("vqa", "nlvr", "ve") for kind in ("", "chance_", "majority_", "blind_")
    }
    expected |= {"eval/attention/in_object"}
    assert set(metrics) == expected
    for name, value in metrics.items():
        upper = 1.0 if name == "eval/attention/in_object" else 100.0
        assert 0.0 <= value <= upper and math.isfinite(value), (name, value)
    assert metrics["eval/attention/in_object"] > 0.0  # named objects cover some patches
    assert seen == [*EVAL_TASKS, "attention"]

    for saved, module in zip(before, (model, objectives), strict=True):
        for key, value in module.state_dict().items():
            assert torch.equal(saved[key], value), key
    assert all(m.training for m in model.modules()) and all(m.training for m in objectives.modules())


def test_finetune_is_deterministic_for_a_seed(shapes_tiny):
    cfg, tokenizer, model, _ = _setup(shapes_tiny)
    first_model, first_head, first_acc = finetuned(VE, model, cfg, tokenizer, CPU)
    _, again_head, again_acc = finetuned(VE, model, cfg, tokenizer, CPU)
    cfg.train.seed = 1
    _, other_head, _ = finetuned(VE, model, cfg, tokenizer, CPU)
    assert first_acc == again_acc
    for (name, a), b in zip(first_head.state_dict().items(), again_head.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    changed = [not torch.equal(a, b) for a, b in zip(first_model.parameters(), model.parameters(), strict=True)]
    assert any(changed)  # the copy was trained ...
    assert not torch.equal(first_head[0].weight, other_head[0].weight)  # ... from the seed


@pytest.mark.parametrize("layers", ["fusion", "all"])
def test_finetune_layers_fusion_freezes_the_encoders(shapes_tiny, layers):
    from workbench.evaluate.nlvr import NLVR

    cfg, tokenizer, model, _ = _setup(shapes_tiny, f"eval.finetune_layers={layers}", "eval.finetune_lr=1e-2")
    tuned, _, acc = finetuned(NLVR, model, cfg, tokenizer, CPU)
    assert 0.0 <= acc <= 100.0
    for part in ("vision", "text", "fusion"):
        same = all(
            torch.equal(a, b)
            for a, b in zip(getattr(tuned, part).parameters(), getattr(model, part).parameters(), strict=True)
        )
        assert same == (layers == "fusion" and part != "fusion"), part


def test_finetune_layers_last_trains_only_the_last_fusion_layer(shapes_tiny):
    from workbench.evaluate.nlvr import NLVR

    cfg, tokenizer, model, _ = _setup(
        shapes_tiny,
        "model.fusion.layers=2",
        "eval.finetune_layers=last",
        "eval.finetune_lr=1e-2",
        "eval.finetune_steps=4",
    )
    tuned, _, _ = finetuned(NLVR, model, cfg, tokenizer, CPU)

    def same(part: str) -> bool:
        tuned_part, part_before = tuned.get_submodule(part), model.get_submodule(part)
        return all(torch.equal(a, b) for a, b in zip(tuned_part.parameters(), part_before.parameters(), strict=True))

    for part in (
        "vision",
        "text",
        "fusion.text_bridge",
        "fusion.image_bridge",
        "fusion.text_layers.0",
        "fusion.image_layers.0",
    ):
        assert same(part), part
    for part in ("fusion.text_layers.1", "fusion.image_layers.1", "fusion.text_pooler"):
        assert not same(part), part


@pytest.mark.parametrize("fusion_layers", [1, 2, 3])
def test_cached_fusion_states_give_the_full_pass_features(shapes_tiny, fusion_layers):
    """`encode(..., fusion_layers=k)` + `from_layer` is the full pass: VE's joint and NLVR's pair
    (whose second image has its own text state past a fusion layer)."""
    from workbench.evaluate.finetune import joint_features, precomputed_fusion_layers, preloaded
    from workbench.evaluate.nlvr import pair_features

    cfg, tokenizer, model, _ = _setup(shapes_tiny, f"model.fusion.layers={fusion_layers}")
    frozen = precomputed_fusion_layers(model, "last")
    assert frozen == fusion_layers - 1
    model.eval()
    rows = torch.tensor([4, 1, 2])
    for task, features in (("ve", joint_features), ("nlvr", pair_features)):
        split = preloaded(cfg, tokenizer, task, "train")
        with torch.no_grad():
            direct = features(model, split.batch(rows))
            cached = features(model, split.batch(rows, split.encode(model, cfg, CPU, fusion_layers=frozen)))
        assert torch.allclose(direct, cached, atol=1e-5), task


def test_preloaded_split_equals_the_dataset_and_cached_encodings_the_model(shapes_tiny):
    from workbench.data import task_dataset
    from workbench.evaluate.finetune import joint_features, preloaded

    cfg, tokenizer, model, _ = _setup(shapes_tiny)
    dataset, collate = task_dataset(cfg, tokenizer, "ve", "train")
    split = preloaded(cfg, tokenizer, "ve", "train")
    assert preloaded(cfg, tokenizer, "ve", "train") is split  # loaded once per process
    rows = torch.tensor([3, 0, 5])
    expected = collate([dataset[i] for i in rows.tolist()])
    got = split.batch(rows)
    assert torch.allclose(got["image"], expected["image"], atol=1e-5)
    for key in ("text_ids", "text_mask", "label"):
        assert torch.equal(got[key], expected[key]), key
    model.eval()
    with torch.no_grad():
        direct = joint_features(model, got)
        cached = joint_features(model, split.batch(rows, split.encode(model, cfg, CPU)))
    assert torch.allclose(direct, cached, atol=1e-5)


def test_same_text_units_stay_in_one_batch():
    from workbench.evaluate.finetune import batch_rows

    class Split:
        texts = ["a", "a", "b", "b", "c", "c", "c", "d"]

    batches = batch_rows(Split(), batch_size=4, seed=0, group_size=2)
    for _ in range(6):
        rows = next(batches).tolist()
        assert len(rows) == 4
        for row in rows:
            partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}.get(row)
            if partner is not None and rows.index(row) not in (0, len(rows) - 1):
                assert partner in rows
    plain = batch_rows(Split(), batch_size=4, seed=0, group_size=0)
    assert sorted(next(plain).tolist() + next(plain).tolist()) == list(range(8))


def test_retrieval_reranks_exactly_k_and_follows_the_built_heads(shapes_tiny):
    from workbench.data import task_dataset

    cfg, tokenizer, model, objectives = _setup(shapes_tiny, "eval.rerank_score=itm")  # ALBEF: the ITM logit alone
    dataset, _ = task_dataset(cfg, tokenizer, "retrieval", cfg.eval.split)
    scores = retrieval_scores(model.eval(), objectives, dataset, tokenizer, cfg, CPU)
    i2t, t2i = scores["final"]
    assert i2t.shape == (len(dataset), len(dataset.texts)) and t2i.shape == i2t.t().shape
    assert ((i2t != -100).sum(dim=1) == 4).all() and ((t2i != -100).sum(dim=1) == 4).all()
    itc_i2t, _ = scores["itc"]
    # the re-ranked candidates are ITC's top 4 (identical captions tie: lower index first)
    top = torch.sort(itc_i2t, dim=1, descending=True, stable=True).indices[:, :4]
    assert (i2t.gather(1, top) != -100).all()
    cfg.eval.rerank_score = "itm+itc"  # BLIP's score: the same ITM logits plus the ITC cosine
    blip_i2t, blip_t2i = retrieval_scores(model, objectives, dataset, tokenizer, cfg, CPU)["final"]
    candidates = i2t != -100
    assert torch.equal(blip_i2t != -100, candidates) and torch.equal(blip_t2i != -100, t2i != -100)
    assert torch.allclose(blip_i2t[candidates], i2t[candidates] + itc_i2t[candidates], atol=1e-5)
    cfg.eval.rerank_score = "itm+itc_logit"  # the same candidates, plus ITC's logit (cosine / temperature)
    temperature = float(built_objective(objectives, "itc").temperature.detach())
    assert temperature != 1.0
    logit_i2t, logit_t2i = retrieval_scores(model, objectives, dataset, tokenizer, cfg, CPU)["final"]
    assert torch.equal(logit_i2t != -100, candidates) and torch.equal(logit_t2i != -100, t2i != -100)
    assert torch.allclose(logit_i2t[candidates], i2t[candidates] + itc_i2t[candidates] / temperature, atol=1e-4)
    t2i_candidates = t2i != -100
    assert torch.allclose(
        logit_t2i[t2i_candidates], t2i[t2i_candidates] + itc_i2t.t()[t2i_candidates] / temperature, atol=1e-4
    )

    itm_off = _setup(shapes_tiny, "objectives.itm.enabled=false", "eval.tasks=[retrieval]")
    metrics = evaluate_all(*itm_off[2:], itm_off[0], itm_off[1], CPU)
    assert {f"eval/retrieval/{k}" for k in RETRIEVAL_KEYS} <= set(metrics)
    assert not any(k.startswith("eval/retrieval_itc/") for k in metrics)  # no re-ranking: not logged twice

    itc_off = _setup(shapes_tiny, "objectives.itc.enabled=false", "objectives.itm.negatives=random")
    full = retrieval_scores(itc_off[2].eval(), itc_off[3], dataset, tokenizer, itc_off[0], CPU)
    assert set(full) == {"final"} and (full["final"][0] != -100).all()  # every pair scored by ITM

    neither = _setup(
        shapes_tiny, "objectives.itc.enabled=false", "objectives.itm.enabled=false", "objectives.softmask.enabled=false"
    )
    with pytest.raises(ConfigError, match="retrieval needs objectives.itc or objectives.itm"):
        retrieval_scores(neither[2], neither[3], dataset, tokenizer, neither[0], CPU)


def test_cross_attention_maps_are_the_fusion_probabilities_on_patches(shapes_tiny):
    from workbench.data import task_dataset

    cfg, tokenizer, model, _ = _setup(shapes_tiny)
    dataset, collate = task_dataset(cfg, tokenizer, "ve", cfg.eval.split)
    batch = collate([dataset[i] for i in range(3)])
    model.eval()
    maps = cross_attention_maps(model, batch, reduce="mean", query_position=torch.tensor([0, 1, 2]))
    side = cfg.data.image_size // cfg.model.vision.patch_size
    assert maps.shape == (3, 1, side, side)
    with torch.no_grad():
        out = model(batch, return_attention=True)
    attn = out["cross_attn"][-1].mean(dim=1)  # [B, L, S]
    expected = attn[torch.arange(3), torch.tensor([0, 1, 2])][:, out["patch_positions"]]
    assert torch.allclose(maps.reshape(3, -1), expected)
    assert (maps.sum(dim=(1, 2, 3)) < 1).all()  # the frame CLS takes the rest of the mass


# ------------------------------------------------------- exact speed-ups of the fine-tunes
@pytest.mark.parametrize("global_token", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_pooled_only_fusion_gives_the_full_pass_pooled_outputs(global_token, layers):
    from workbench.models.fusion import CoAttentionFusion

    cfg = load_config("base", [f"model.fusion.layers={layers}", "model.fusion.width=32", "model.fusion.heads=2"])
    torch.manual_seed(0)
    fusion = CoAttentionFusion(cfg.model.fusion, vision_width=24, text_width=16, image_global_token=global_token)
    frames, per_frame = 2, 5  # a 2-frame video: [video CLS] + per frame [CLS, 4 patches]
    image = torch.randn(3, global_token + frames * per_frame, 24)
    text = torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0  # padding is still masked out of the keys
    positions = global_token + per_frame * torch.arange(frames)
    full = fusion(image, text, mask, positions)
    pooled = fusion(image, text, mask, positions, pooled_only=True)
    for key in ("fused_text_cls", "fused_frame_cls", "fused_image_cls", "joint"):
        assert pooled[key].shape == full[key].shape, key
        assert torch.allclose(pooled[key], full[key], atol=1e-5), key
    assert "fused_text" not in pooled and "fused_image" not in pooled  # only the pooled rows were computed
    # the other rows still serve as keys: changing a patch changes the pooled output
    image[:, -1] += 1.0
    assert not torch.allclose(
        fusion(image, text, mask, positions, pooled_only=True)["joint"], pooled["joint"], atol=1e-4
    )


def _full_pass_joint(model, batch, image_key="image"):
    """The joint feature the slow way: every row of every fusion layer (what pooled_only replaces)."""
    return model.fuse(
        batch[f"{image_key}_tokens"], batch["text_tokens"], batch["text_mask"], batch["frame_cls_positions"]
    )["joint"]


def test_nlvr_one_pass_pair_features_equal_two_passes(shapes_tiny):
    from workbench.evaluate.finetune import preloaded
    from workbench.evaluate.nlvr import pair_features

    cfg, tokenizer, model, _ = _setup(shapes_tiny)
    split = preloaded(cfg, tokenizer, "nlvr", "train")
    rows = torch.tensor([0, 3, 1, 4])
    model.eval()
    with torch.no_grad():
        raw = split.batch(rows)
        encoded = split.batch(rows, split.encode(model, cfg, CPU))
        two_passes = torch.cat(
            [_full_pass_joint(model, encoded, "image"), _full_pass_joint(model, encoded, "image2")], -1
        )
        one_pass = pair_features(model, encoded)
        from_frames = pair_features(model, raw)  # eval.finetune_layers=all: the encoders run inside
    assert one_pass.shape == (4, 4 * cfg.model.fusion.width)
    assert torch.allclose(one_pass, two_passes, atol=1e-5)
    assert torch.allclose(from_frames, two_passes, atol=1e-5)
    assert not torch.allclose(one_pass[:, : 2 * cfg.model.fusion.width], one_pass[:, 2 * cfg.model.fusion.width :])


@pytest.mark.parametrize("task_name", ["ve", "nlvr"])
def test_fast_finetune_path_trains_the_same_model_as_the_full_pass(shapes_tiny, task_name):
    """pooled_only and the one-pass NLVR pair are pure speed-ups: same head, same accuracy for a seed."""
    import dataclasses

    from workbench.evaluate.nlvr import NLVR

    task = {"ve": VE, "nlvr": NLVR}[task_name]
    if task_name == "nlvr":

        def slow_features(m, b):
            return torch.cat([_full_pass_joint(m, b, "image"), _full_pass_joint(m, b, "image2")], -1)

    else:
        slow_features = _full_pass_joint
    slow_task = dataclasses.replace(task, features=slow_features)
    cfg, tokenizer, model, _ = _setup(
        shapes_tiny, "eval.finetune_layers=fusion", "eval.finetune_steps=6", "eval.finetune_lr=1e-2"
    )
    fast_model, fast_head, fast_acc = finetuned(task, model, cfg, tokenizer, CPU)
    slow_model, slow_head, slow_acc = finetuned(slow_task, model, cfg, tokenizer, CPU)
    assert fast_acc == slow_acc
    # equal to float rounding, which Adam's normalised steps grow to ~1e-5 in 6 steps at lr 1e-2
    # (a wrong feature would move weights by ~lr)
    for (name, fast), slow in zip(fast_head.state_dict().items(), slow_head.state_dict().values(), strict=True):
        assert torch.allclose(fast, slow, atol=1e-4), name
    for (name, fast), slow in zip(
        fast_model.fusion.state_dict().items(), slow_model.fusion.state_dict().values(), strict=True
    ):
        assert torch.allclose(fast, slow, atol=1e-4), name
    moved = [
        not torch.equal(a, b) for a, b in zip(fast_model.fusion.parameters(), model.fusion.parameters(), strict=True)
    ]
    assert any(moved)  # the fusion was trained (lr 1e-2), not just left equal
