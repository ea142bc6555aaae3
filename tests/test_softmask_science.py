"""SoftMask's science on hand-made data: which word Grad-CAM conditions on, what a constant
cam masks, and how the masked positive enters ITM (issue 13)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.test_objectives_grad import IMAGE_SIZE, PATCH, SPECIAL, config, make_batch, new_model, step
from workbench.data.tokenizer import build_tokenizer
from workbench.objectives import build_objectives
from workbench.objectives.content_words import content_mask, content_token_ids
from workbench.objectives.context import special_token_mask
from workbench.objectives.softmask import hard_mask, pick_words

N = (IMAGE_SIZE // PATCH) ** 2
WORDS = "a an the there is are one two large small red blue circle square left right of image shape shapes".split()


def tokenizer():
    return build_tokenizer([*WORDS, ".", ","])


def test_content_words_are_colour_shape_size_position_and_count():
    tok = tokenizer()
    content = {tok.convert_ids_to_tokens(i) for i in content_token_ids(tok)}
    assert content == {"one", "two", "large", "small", "red", "blue", "circle", "square", "left", "right"}


def test_pick_words_chooses_content_words_and_falls_back_to_any_word():
    tok = tokenizer()
    captions = ["there is one large red circle.", "the image is a shape.", ""]
    encoded = tok(captions, padding="longest", return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    special = special_token_mask(ids, mask, {"pad": tok.pad_token_id, "cls": tok.cls_token_id, "sep": tok.sep_token_id})
    content = content_mask(ids, torch.tensor(content_token_ids(tok)))
    picks = {0: set(), 1: set(), 2: set()}
    for seed in range(200):
        words = pick_words(special, torch.Generator().manual_seed(seed), content)
        for row in picks:
            picks[row].add(tok.convert_ids_to_tokens(int(ids[row, words[row]])))
    assert picks[0] == {"one", "large", "red", "circle"}  # never "there", "is" or "."
    assert picks[1] == {"the", "image", "is", "a", "shape", "."}  # no content word: any real word
    assert picks[2] == {"[CLS]"}  # no word at all
    any_word = {
        tok.convert_ids_to_tokens(int(ids[0, pick_words(special, torch.Generator().manual_seed(s))[0]]))
        for s in range(200)
    }
    assert {"there", "is", "."} <= any_word  # words: any -- the toggle changes the choice


def test_softmask_words_toggle_reaches_the_objective():
    tok = tokenizer()
    ids = tok(["there is one red circle."], return_tensors="pt")["input_ids"]
    for words, expected in (("content", True), ("any", False)):
        cfg = config(on=("itm", "softmask"), **{"softmask.words": words})
        model = new_model(cfg)
        objectives = build_objectives(cfg.objectives, model.dims, SPECIAL, content_ids=content_token_ids(tok))
        preferred = objectives.softmask.preferred_words(ids)
        assert (preferred is not None) == expected
        if expected:
            names = [tok.convert_ids_to_tokens(int(i)) for i in ids[0][preferred[0]]]
            assert names == ["one", "red", "circle"]


def test_hard_mode_with_a_constant_cam_masks_nothing():
    constant = torch.zeros(3, N)  # min-max of a constant row
    assert not hard_mask(constant, 0.25).any()
    cam = torch.zeros(2, N)
    cam[0, 5], cam[1, [1, 2, 3, 4, 6, 7]] = 1.0, torch.linspace(0.1, 1.0, 6)
    chosen = hard_mask(cam, 0.25)  # top round(0.25 * 16) = 4, but only where cam > 0
    assert chosen[0].nonzero().flatten().tolist() == [5]
    assert chosen[1].nonzero().flatten().tolist() == [3, 4, 6, 7]


def test_hard_mode_masks_nothing_when_the_itm_score_ignores_the_image():
    cfg = config(on=("itm", "softmask"), **{"softmask.mode": "hard", "softmask.hard_ratio": 0.5})
    model = new_model(cfg)
    objectives = build_objectives(cfg.objectives, model.dims, SPECIAL)
    with torch.no_grad():
        objectives.itm.head.weight.zero_()  # match logit constant: zero gradient, zero cam everywhere
    _, out = step(model, objectives, make_batch())
    assert out["softmask_itm/masked"].item() == 0.0
    cfg.objectives.softmask.mode = "random"  # the control still masks its count
    objectives = build_objectives(cfg.objectives, model.dims, SPECIAL)
    _, out = step(model, objectives, make_batch())
    assert out["softmask_itm/masked"].item() == pytest.approx(0.5)


def test_itm_batch_puts_the_masked_pairs_into_one_itm_cross_entropy():
    batch = make_batch()
    cfg = config(
        on=("itm", "softmask"),
        **{"softmask.positive": "itm_batch", "softmask.mode": "random", "itm.negatives": "random"},
    )
    model = new_model(cfg).eval()
    objectives = build_objectives(cfg.objectives, model.dims, SPECIAL)
    assert objectives.loss_names == ("itm",)
    ctx, out = step(model, objectives, batch)
    assert "loss/softmask_itm" not in out and 0 < out["itm/masked"].item() < 1
    masked = ctx.memo("softmask_masked_pair", lambda: None)["logits"]
    assert ctx.fusion_passes == 3  # clean, negatives, masked: nothing computed twice
    clean = objectives.itm.logits(ctx.pass_("clean")["joint"])
    # the 3B ITM rows alone (same draws): the separate-loss form's ITM term
    separate_cfg = config(on=("itm", "softmask"), **{"softmask.mode": "random", "itm.negatives": "random"})
    separate = build_objectives(separate_cfg.objectives, model.dims, SPECIAL)
    separate.load_state_dict(objectives.state_dict())
    _, out3 = step(model, separate, batch)
    rows3 = 3 * batch["text_ids"].shape[0]
    ones = torch.ones(4, dtype=torch.long)
    expected = (rows3 * out3["loss/itm"] + F.cross_entropy(masked, ones, reduction="sum")) / (rows3 + 4)
    assert out["loss/itm"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["loss/itm"].item())
    assert out3["loss"].item() == pytest.approx(out3["loss/itm"].item() + out3["loss/softmask_itm"].item(), rel=1e-5)
    assert clean.shape == (4, 2)


def test_a_uniform_map_scores_the_object_area_fraction_and_object_words_are_found():
    from workbench.evaluate.attention import gradcam_layer, in_object_share, mask_on_patch_grid, object_word_positions

    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 2:10, 4:8] = True  # 32 of 256 pixels
    uniform = torch.ones(1, 4, 4)
    area = mask_on_patch_grid(mask, (4, 4)).mean()
    assert in_object_share(uniform, mask).item() == pytest.approx(area.item()) == pytest.approx(32 / 256)
    peaked = torch.zeros(1, 4, 4)
    peaked[0, 1, 1] = 1.0  # the patch fully inside the object
    assert in_object_share(peaked, mask).item() == pytest.approx(1.0)
    tokens = ["[CLS]", "a", "red", "circle", "left", "of", "a", "blue", "square", ".", "[SEP]"]
    assert object_word_positions(tokens, {"shape": "circle", "color": "red"}) == [2, 3]
    layers = config(on=("itm",)).model.fusion.layers
    cfg = config(on=("itm",))
    assert gradcam_layer(cfg) == 0
    cfg.objectives.softmask.layer = layers - 1
    assert gradcam_layer(cfg) is None  # the last layer's word cam is zero: no score
