"""Model: shapes, pooling variants, attention masks, MAE drop, gradients, offline weight loading."""

from __future__ import annotations

import pytest
import timm
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from workbench.config import load_config
from workbench.errors import ConfigError
from workbench.models import VLPModel, build_model
from workbench.models.fusion import Attention
from workbench.models.vision import POOLINGS

POOLING_NAMES = list(POOLINGS)
IMAGE_SIZE, PATCH, WIDTH = 16, 4, 32
N = (IMAGE_SIZE // PATCH) ** 2  # patches per frame
VOCAB, PAD, MAX_LEN = 50, 0, 12


def tiny_cfg(**overrides):
    base = {
        "data.image_size": IMAGE_SIZE,
        "data.max_text_len": MAX_LEN,
        "model.vision.patch_size": PATCH,
        "model.vision.width": WIDTH,
        "model.vision.depth": 2,
        "model.vision.heads": 2,
        "model.text.width": 24,
        "model.text.depth": 1,
        "model.text.heads": 2,
        "model.fusion.width": 16,
        "model.fusion.heads": 2,
        "model.fusion.layers": 2,
    }
    return load_config(None, {**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> VLPModel:
    torch.manual_seed(seed)
    cfg = tiny_cfg(**overrides)
    model = VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=IMAGE_SIZE, max_text_len=MAX_LEN)
    return model.eval()


def batch(num_frames: int = 1, batch_size: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text_ids = torch.randint(3, VOCAB, (batch_size, 7), generator=g)
    text_mask = torch.ones_like(text_ids)
    text_ids[0, 5:], text_mask[0, 5:] = PAD, 0  # first caption is padded
    image = torch.randn(batch_size, num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    return {"image": image, "text_ids": text_ids, "text_mask": text_mask}


def share_weights(source: VLPModel, target: VLPModel) -> VLPModel:
    """Copy every common parameter (global_cls has one extra: its video CLS)."""
    missing, unexpected = target.load_state_dict(source.state_dict(), strict=False)
    assert set(missing) <= {"vision.pooling.video_cls"} and set(unexpected) <= {"vision.pooling.video_cls"}
    return target


# ----------------------------------------------------------------------- shapes
@pytest.mark.parametrize("pooling", POOLING_NAMES)
@pytest.mark.parametrize("num_frames", [1, 4])
def test_output_shapes_and_token_layout(pooling, num_frames):
    model = tiny_model(**{"model.vision.pooling": pooling})
    out = model(batch(num_frames), return_attention=True)
    g = 1 if pooling == "global_cls" else 0
    S, B, L, D = g + num_frames * (1 + N), 2, 7, 16
    assert out["image_tokens"].shape == (B, S, WIDTH)
    assert out["image_cls"].shape == (B, WIDTH)
    assert out["frame_cls_positions"].tolist() == [g + t * (1 + N) for t in range(num_frames)]
    assert out["patch_positions"].tolist() == [g + t * (1 + N) + 1 + j for t in range(num_frames) for j in range(N)]
    assert out["text_tokens"].shape == (B, L, 24) and out["text_cls"].shape == (B, 24)
    assert out["fused_text"].shape == (B, L, D) and out["fused_image"].shape == (B, S, D)
    assert out["fused_text_cls"].shape == (B, D) and out["fused_image_cls"].shape == (B, D)
    assert out["fused_frame_cls"].shape == (B, num_frames, D)
    assert out["joint"].shape == (B, 2 * D)
    assert len(out["cross_attn"]) == 2 and all(a.shape == (B, 2, L, S) for a in out["cross_attn"])
    assert model.dims == {
        "vision_width": WIDTH,
        "text_width": 24,
        "fusion_width": 16,
        "num_patches": N,
        "vocab_size": VOCAB,
    }
    assert "cross_attn" not in model(batch(num_frames))


@pytest.mark.parametrize("pooling", POOLING_NAMES)
def test_global_features_are_what_the_variant_says(pooling):
    model = tiny_model(**{"model.vision.pooling": pooling})
    out = model(batch(num_frames=3))
    frame_cls = out["image_tokens"][:, out["frame_cls_positions"]]
    if pooling == "global_cls":
        torch.testing.assert_close(out["image_cls"], out["image_tokens"][:, 0], rtol=0, atol=0)
        torch.testing.assert_close(out["fused_image_cls"], out["fused_image"][:, 0], rtol=0, atol=0)
    else:
        torch.testing.assert_close(out["image_cls"], frame_cls.mean(1))
        torch.testing.assert_close(out["fused_image_cls"], out["fused_frame_cls"].mean(1))
    torch.testing.assert_close(out["fused_frame_cls"], out["fused_image"][:, out["frame_cls_positions"]])
    torch.testing.assert_close(out["text_cls"], out["text_tokens"][:, 0])
    torch.testing.assert_close(out["fused_text_cls"], out["fused_text"][:, 0])


# ------------------------------------------------------------------- pooling
def test_pooling_variants_differ_on_a_video_and_frame_cls_equals_mean_on_an_image():
    frame_cls = tiny_model(**{"model.vision.pooling": "frame_cls"})
    mean = share_weights(frame_cls, tiny_model(seed=5, **{"model.vision.pooling": "mean"}))
    global_cls = share_weights(frame_cls, tiny_model(seed=5, **{"model.vision.pooling": "global_cls"}))
    video = batch(num_frames=4)
    assert not torch.equal(video["image"][:, 0], video["image"][:, 1])
    feats = {
        name: m(video)["image_cls"]
        for name, m in [("frame_cls", frame_cls), ("mean", mean), ("global_cls", global_cls)]
    }
    for a, b in [("frame_cls", "mean"), ("frame_cls", "global_cls"), ("mean", "global_cls")]:
        assert (feats[a] - feats[b]).abs().max() > 1e-3, (a, b)

    image = batch(num_frames=1)
    out_frame_cls, out_mean = frame_cls(image), mean(image)
    for key, value in out_frame_cls.items():
        assert torch.equal(value, out_mean[key]), key


def perturb_second_frame(pooling: str):
    """Encode a 3-frame video, then again with frame 1's pixels changed (1-block ViT)."""
    model = tiny_model(**{"model.vision.pooling": pooling, "model.vision.depth": 1})
    video = batch(num_frames=3)["image"]
    changed = video.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    before, after = model.encode_image(video), model.encode_image(changed)
    cls_pos = before["frame_cls_positions"]
    frame0_patches = before["patch_positions"][:N]
    diff = (before["image_tokens"] - after["image_tokens"]).abs()
    return diff, cls_pos, frame0_patches


def test_mean_pooling_frames_are_independent():
    diff, cls_pos, frame0_patches = perturb_second_frame("mean")
    assert diff[:, cls_pos[0]].max() < 1e-6 and diff[:, frame0_patches].max() < 1e-6
    assert diff[:, cls_pos[1]].max() > 1e-3


def test_frame_cls_pooling_cls_sees_all_frames_patches_only_their_own():
    diff, cls_pos, frame0_patches = perturb_second_frame("frame_cls")
    assert diff[:, cls_pos[0]].max() > 1e-3  # frame 0's CLS attends to frame 1
    assert diff[:, cls_pos[2]].max() > 1e-3
    assert diff[:, frame0_patches].max() < 1e-6  # frame 0's patches attend within frame 0 only


def test_global_cls_pooling_only_the_video_cls_sees_all_frames():
    diff, cls_pos, frame0_patches = perturb_second_frame("global_cls")
    assert diff[:, 0].max() > 1e-3  # the video CLS
    assert diff[:, cls_pos[0]].max() < 1e-6 and diff[:, frame0_patches].max() < 1e-6


# ----------------------------------------------------------------- MAE drop
@pytest.mark.parametrize("pooling", POOLING_NAMES)
def test_keep_patches_removes_tokens_at_the_same_positions_in_every_frame(pooling):
    model = tiny_model(**{"model.vision.pooling": pooling})
    entering_blocks = []
    model.vision.vit.norm_pre.register_forward_pre_hook(lambda m, args: entering_blocks.append(args[0]))
    video = batch(num_frames=3)["image"]
    keep = torch.tensor([[0, 5, 9], [15, 2, 7]])  # per sample, K=3 of N=16
    model.encode_image(video)  # the full sequence: its block input is entering_blocks[0]
    kept = model.encode_image(video, keep_patches=keep)
    g, K = (1 if pooling == "global_cls" else 0), 3
    assert kept["image_tokens"].shape == (2, g + 3 * (1 + K), WIDTH)
    assert kept["frame_cls_positions"].tolist() == [g, g + 4, g + 8]
    assert kept["patch_positions"].tolist() == [g + t * 4 + 1 + j for t in range(3) for j in range(K)]
    # the tokens that enter the blocks are exactly the kept ones of the full sequence, in every frame
    full_in, kept_in = entering_blocks[0], entering_blocks[1]
    if pooling == "mean":  # [B*T, P, D] -> [B, T*P, D]
        full_in, kept_in = full_in.reshape(2, -1, WIDTH), kept_in.reshape(2, -1, WIDTH)
    for b in range(2):
        for t in range(3):
            want = full_in[b, g + t * (1 + N) + torch.cat([torch.tensor([0]), 1 + keep[b]])]
            got = kept_in[b, g + t * (1 + K) : g + (t + 1) * (1 + K)]
            assert torch.equal(got, want)


# ------------------------------------------------------------------- fusion
def test_sdpa_and_explicit_attention_paths_agree():
    model = tiny_model(**{"model.vision.pooling": "frame_cls"})
    enc = model(batch(num_frames=2))
    image_mask = torch.ones(enc["image_tokens"].shape[:2], dtype=torch.long)
    image_mask[1, 3:9] = 0
    args = (enc["image_tokens"], enc["text_tokens"], batch()["text_mask"], enc["frame_cls_positions"], image_mask)
    fast, explicit = model.fuse(*args), model.fuse(*args, return_attention=True)
    for key, value in fast.items():
        torch.testing.assert_close(explicit[key], value, rtol=0, atol=1e-5)


def test_cross_attention_rows_sum_to_one_over_unmasked_image_tokens():
    model = tiny_model()
    enc = model(batch(num_frames=2))
    S = enc["image_tokens"].shape[1]
    image_mask = torch.ones(2, S, dtype=torch.long)
    image_mask[0, 10:20] = 0
    out = model.fuse(
        enc["image_tokens"],
        enc["text_tokens"],
        batch()["text_mask"],
        enc["frame_cls_positions"],
        image_mask,
        return_attention=True,
    )
    for attn in out["cross_attn"]:
        assert attn.shape == (2, 2, 7, S)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 7))
        assert torch.all(attn[0, :, :, 10:20] == 0)
        assert torch.all(attn[0, :, :, :10] > 0) and torch.all(attn[1] > 0)


def test_padded_text_keys_get_zero_attention():
    attention = Attention(width=8, heads=2)
    x = torch.randn(2, 5, 8)
    key_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    _, probs = attention(x, x, key_mask, return_probs=True)
    assert torch.all(probs[0, :, :, 3:] == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 5))

    # end to end: what sits at padded text positions changes nothing the real tokens or the image see
    model = tiny_model()
    data = batch(num_frames=2)
    enc = model(data)
    text_tokens = enc["text_tokens"].clone()
    text_tokens[0, 5:] = torch.randn(2, 24) * 10
    args = (enc["image_tokens"], data["text_mask"], enc["frame_cls_positions"])
    clean = model.fuse(args[0], enc["text_tokens"], *args[1:])
    noisy = model.fuse(args[0], text_tokens, *args[1:])
    torch.testing.assert_close(noisy["fused_image"], clean["fused_image"])
    torch.testing.assert_close(noisy["fused_text"][0, :5], clean["fused_text"][0, :5])
    torch.testing.assert_close(noisy["joint"], clean["joint"])


def test_cross_attention_stays_in_the_autograd_graph_for_grad_cam():
    model = tiny_model()
    out = model(batch(num_frames=1), return_attention=True)
    (grad,) = torch.autograd.grad(out["joint"][:, 0].sum(), out["cross_attn"][-1])
    assert grad.shape == out["cross_attn"][-1].shape and grad.abs().sum() > 0


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("pooling", POOLING_NAMES)
def test_every_trainable_parameter_gets_a_gradient(pooling):
    model = tiny_model(**{"model.vision.pooling": pooling}).train()
    out = model(batch(num_frames=2))
    loss = sum(v.float().pow(2).mean() for v in out.values() if torch.is_tensor(v) and v.is_floating_point())
    loss.backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert no_grad == []


# ------------------------------------------------------- real weights, offline
def test_missing_vision_checkpoint_is_a_config_error_naming_the_key(tmp_path):
    cfg = tiny_cfg(
        **{"model.vision.timm_name": "vit_tiny_patch16_224", "model.vision.checkpoint": str(tmp_path / "nope.pth")}
    )
    with pytest.raises(ConfigError, match=r"model\.vision\.checkpoint: .*nope\.pth.* never downloaded"):
        VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=IMAGE_SIZE, max_text_len=MAX_LEN)
    (tmp_path / "w.pth").write_bytes(b"")
    cfg = tiny_cfg(**{"model.vision.timm_name": "resnet18", "model.vision.checkpoint": str(tmp_path / "w.pth")})
    with pytest.raises(ConfigError, match=r"model\.vision\.timm_name: 'resnet18' must be a timm VisionTransformer"):
        VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=IMAGE_SIZE, max_text_len=MAX_LEN)
    cfg = tiny_cfg(**{"model.vision.timm_name": "vit_tinny_patch16_224"})
    with pytest.raises(ConfigError, match=r"model\.vision\.timm_name: 'vit_tinny_patch16_224' is not a timm model"):
        VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=IMAGE_SIZE, max_text_len=MAX_LEN)


def test_missing_text_checkpoint_is_a_config_error_naming_the_key(tmp_path):
    cfg = tiny_cfg(**{"model.text.hf_name": str(tmp_path / "no-bert")})
    with pytest.raises(ConfigError, match=r"model\.text\.hf_name: .*no-bert.*nothing is downloaded"):
        VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=IMAGE_SIZE, max_text_len=MAX_LEN)


def test_real_weights_load_from_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, global_pool="")
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    bert = BertModel(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=16,
        ),
        add_pooling_layer=False,
    )
    bert.save_pretrained(tmp_path / "bert")

    cfg = tiny_cfg(
        **{
            "data.image_size": 32,
            "model.vision.timm_name": "vit_tiny_patch16_224",
            "model.vision.checkpoint": str(tmp_path / "vit.pth"),
            "model.text.hf_name": str(tmp_path / "bert"),
        }
    )
    model = VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=32, max_text_len=MAX_LEN)
    for name, value in vit.state_dict().items():
        assert torch.equal(model.vision.vit.state_dict()[name], value), name
    for name, value in bert.state_dict().items():
        assert torch.equal(model.text.bert.state_dict()[name], value), name
    assert model.dims["vision_width"] == 192 and model.dims["num_patches"] == 4 and model.dims["text_width"] == 24
    assert model.text.bert.config._attn_implementation == "sdpa"
    out = model(batch(num_frames=2, seed=3) | {"image": torch.randn(2, 2, 3, 32, 32)})
    assert out["image_tokens"].shape == (2, 2 * (1 + 4), 192)

    # a file that is not this model's weights: one-line error naming the key
    torch.save({"something": torch.zeros(1)}, tmp_path / "wrong.pth")
    cfg = tiny_cfg(
        **{
            "data.image_size": 32,
            "model.vision.timm_name": "vit_tiny_patch16_224",
            "model.vision.checkpoint": str(tmp_path / "wrong.pth"),
        }
    )
    with pytest.raises(
        ConfigError, match=r"model\.vision\.checkpoint: .*wrong\.pth.* does not hold .*missing cls_token"
    ):
        VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=32, max_text_len=MAX_LEN)

    # a checkpoint for another image size: timm resamples the position embedding, the rest loads as is
    cfg = tiny_cfg(
        **{
            "data.image_size": 48,
            "model.vision.timm_name": "vit_tiny_patch16_224",
            "model.vision.checkpoint": str(tmp_path / "vit.pth"),
        }
    )
    model = VLPModel(cfg.model, vocab_size=VOCAB, pad_token_id=PAD, image_size=48, max_text_len=MAX_LEN)
    assert model.vision.vit.pos_embed.shape == (1, 1 + 9, 192) and model.dims["num_patches"] == 9
    assert torch.equal(model.vision.vit.blocks[3].mlp.fc1.weight, vit.blocks[3].mlp.fc1.weight)


# -------------------------------------------------------------- build_model
def word_tokenizer(with_pad: bool = True) -> PreTrainedTokenizerFast:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    specials = dict(unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    if with_pad:
        specials["pad_token"] = "[PAD]"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def test_build_model_takes_vocabulary_and_padding_from_the_tokenizer():
    model = build_model(tiny_cfg(), word_tokenizer())
    assert model.dims["vocab_size"] == 8
    assert model.text.bert.config.vocab_size == 8 and model.text.bert.config.pad_token_id == 0
    assert model.text.bert.config.max_position_embeddings == MAX_LEN
    with pytest.raises(ConfigError, match=r"data\.tokenizer: .*no padding token"):
        build_model(tiny_cfg(), word_tokenizer(with_pad=False))


def test_fusion_init_xavier_keeps_unit_scale_where_bert_init_shrinks():
    bert = tiny_model(**{"model.fusion.width": 64}).fusion
    xavier = tiny_model(**{"model.fusion.width": 64, "model.fusion.init": "xavier"}).fusion
    query_bert, query_xavier = bert.text_layers[0].cross_attn.query, xavier.text_layers[0].cross_attn.query
    assert query_bert.weight.std().item() == pytest.approx(0.02, rel=0.2)  # BERT's N(0, 0.02), truncated
    assert query_xavier.weight.std().item() == pytest.approx((2 / (64 + 64)) ** 0.5, rel=0.1)
    x = torch.randn(256, 64)
    assert query_bert(x).std() < 0.25 < 0.8 < query_xavier(x).std()  # a unit input stays ~unit only with Xavier
    assert torch.equal(xavier.token_type.weight.abs().max() <= 0.04, torch.tensor(True))  # embeddings keep BERT's init
    assert all(
        torch.equal(m.bias, torch.zeros_like(m.bias)) for m in xavier.modules() if isinstance(m, torch.nn.Linear)
    )
