"""Transforms, text augmentation, frame sampling and the resumable pre-training stream."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from workbench.config import load_config
from workbench.data.media import frame_indices, load_video
from workbench.data.shapes_scene import COLORS, Obj, render
from workbench.data.stream import PretrainStream
from workbench.data.text_augment import mask_words, swap_left_right
from workbench.data.tokenizer import load_tokenizer
from workbench.data.transforms import COLOR_FREE_OPS, ColorFreeRandAugment, FrameTransform, build_augment, flip_sample
from workbench.errors import DataError


# ---------------------------------------------------------------------- text
def test_swap_left_right_keeps_everything_else():
    text = "the red circle is left of the blue square. Right! leftover"
    assert swap_left_right(text) == "the red circle is right of the blue square. Left! leftover"
    assert swap_left_right(swap_left_right(text)) == text


def test_mask_words_masks_round_ratio_words_and_keeps_punctuation():
    text = "the red circle is left of the blue square."
    masked = mask_words(text, 0.4, "[MASK]", np.random.default_rng(0))  # 9 words -> 4 masked
    words = masked.rstrip(".").split(" ")
    assert masked.endswith("square.") or masked.endswith("[MASK].")
    assert words.count("[MASK]") == 4 and len(words) == 9
    assert [w for w in words if w != "[MASK]"] == [
        w for w, m in zip(text.rstrip(".").split(" "), words, strict=True) if m != "[MASK]"
    ]
    assert masked == mask_words(text, 0.4, "[MASK]", np.random.default_rng(0))
    assert mask_words(text, 0.0, "[MASK]", np.random.default_rng(0)) == text


# -------------------------------------------------------------------- images
def _one_object_frames(color: str, x: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    image, masks = render([Obj("square", color, "large", x, 32, 9)], 64)
    frames = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
    return frames, torch.from_numpy(masks)


def test_flip_mirrors_image_and_masks_and_swaps_the_caption():
    frames, masks = _one_object_frames("red", x=14)
    flipped, text, flipped_masks = flip_sample(frames, "a red square on the left of the image.", masks)
    assert text == "a red square on the right of the image."
    assert torch.equal(flipped[..., 63 - 14], frames[..., 14])
    cols = flipped_masks[0].any(0).nonzero().flatten()
    assert (cols.min().item(), cols.max().item()) == (63 - 23, 63 - 5)  # was columns 5..23
    assert torch.equal(flipped_masks[0].bool(), (flipped[0] == torch.tensor(COLORS["red"])[:, None, None]).all(0))


def _hue_and_saturation(frames: torch.Tensor) -> tuple[float, float]:
    """Hue/saturation of the mean colour of the non-background pixels of uint8 [1, 3, H, W]."""
    pixels = frames[0].permute(1, 2, 0).reshape(-1, 3).float() / 255
    foreground = pixels[(pixels - 28 / 255).abs().max(1).values > 0.15]
    hue, _, saturation = colorsys.rgb_to_hls(*foreground.mean(0).tolist())
    return hue * 360, saturation


def _hue_gap(a: float, b: float) -> float:
    return min(abs(a - b), 360 - abs(a - b))


@pytest.fixture
def one_thread():
    """Per-sample transforms run single-threaded, as in DataLoader workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_augmentation_never_changes_colours(one_thread):
    assert set(ColorFreeRandAugment._AUGMENTATION_SPACE) == set(COLOR_FREE_OPS)
    cfg = load_config(None, ["augment.image=true", "augment.randaug_ops=3", "augment.randaug_magnitude=15"])
    ours = build_augment(cfg, train=True)
    stock = v2.RandAugment(num_ops=3, magnitude=15)
    stock_changed = 0
    for color in ("red", "green", "blue", "yellow", "purple", "cyan"):
        frames, _ = _one_object_frames(color, x=32)
        hue, saturation = _hue_and_saturation(frames)
        for seed in range(8):
            torch.manual_seed(seed)
            out_hue, out_saturation = _hue_and_saturation(ours(frames))
            assert _hue_gap(out_hue, hue) < 8 and out_saturation > 0.8 * saturation, (color, seed)
            torch.manual_seed(seed)
            stock_hue, stock_saturation = _hue_and_saturation(stock(frames))
            stock_changed += _hue_gap(stock_hue, hue) >= 8 or stock_saturation <= 0.8 * saturation
    assert stock_changed > 0  # the check above would catch colour ops


def test_eval_transform_resizes_and_normalises_exactly():
    cfg = load_config(None, ["data.image_size=32"])
    frames = torch.full((2, 3, 64, 64), 51, dtype=torch.uint8)
    out = FrameTransform(cfg, train=False)(frames)
    assert out.shape == (2, 3, 32, 32) and type(out) is torch.Tensor
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])  # ImageNet (timm)
    assert torch.allclose(out[0, :, 0, 0], (0.2 - mean) / std, atol=1e-6)


def test_video_frames_get_the_same_crop():
    cfg = load_config(None, ["augment.image=true"])
    frames, _ = _one_object_frames("blue")
    torch.manual_seed(0)
    out = FrameTransform(cfg, train=True)(frames.repeat(4, 1, 1, 1))
    assert all(torch.equal(out[0], out[t]) for t in range(4))


# -------------------------------------------------------------------- frames
def test_frame_indices_segment_middles_and_random_within_segments():
    assert frame_indices(8, 4, None) == [0, 2, 4, 6]
    assert frame_indices(6, 4, None) == [0, 1, 3, 4]
    assert frame_indices(4, 4, None) == [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    for _ in range(20):
        picked = frame_indices(8, 4, rng)
        assert [p // 2 for p in picked] == [0, 1, 2, 3]


def test_load_video_samples_frames_and_rejects_short_videos(tmp_path):
    video = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((6, 4, 4, 3), np.uint8)
    np.save(tmp_path / "v.npy", video)
    frames = load_video(tmp_path / "v.npy", 4, None)
    assert frames.shape == (4, 3, 4, 4) and frames[:, 0, 0, 0].tolist() == [0, 1, 3, 4]
    with pytest.raises(DataError, match="has 6 frames, fewer than data.num_frames=8"):
        load_video(tmp_path / "v.npy", 8, None)


# -------------------------------------------------------------------- stream
def _stream_cfg(root, *extra):
    return load_config(
        None,
        [
            f"data.root={root}",
            "train.batch_size=12",
            "data.video_pretrain_files=[video_pretrain.json]",
            "augment.image=true",
            "augment.text=true",
            "augment.flip=true",
            "augment.text_mask_ratio=0.3",
            *extra,
        ],
    )


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stream_resumes_exactly_and_ignores_worker_count(shapes_tiny):
    cfg = _stream_cfg(shapes_tiny)
    tokenizer = load_tokenizer(cfg.data)
    straight = _take(PretrainStream(cfg, tokenizer, seed=5).batches(0), 14)
    resumed = _take(PretrainStream(cfg, tokenizer, seed=5).batches(9), 5)
    assert all(_same(a, b) for a, b in zip(straight[9:], resumed, strict=True))
    with_workers = _take(
        PretrainStream(_stream_cfg(shapes_tiny, "data.num_workers=2"), tokenizer, seed=5).batches(9), 3
    )
    assert all(_same(a, b) for a, b in zip(straight[9:12], with_workers, strict=True))
    other_seed = next(PretrainStream(cfg, tokenizer, seed=6).batches(0))
    assert not _same(straight[0], other_seed)
    # image batches on even steps, video batches (num_frames frames) on odd steps
    assert [b["image"].shape[1] for b in straight[:4]] == [1, cfg.data.num_frames, 1, cfg.data.num_frames]


def test_stream_walks_epoch_permutations(shapes_tiny):
    cfg = load_config(None, [f"data.root={shapes_tiny}", "train.batch_size=8"])
    stream = PretrainStream(cfg, load_tokenizer(cfg.data), seed=0)
    size = len(json.loads((shapes_tiny / "pretrain.json").read_text()))
    steps_per_epoch = size // 8
    first = [key[1] for step in range(steps_per_epoch) for key in stream.step_keys(step)]
    second = [key[1] for step in range(steps_per_epoch, 2 * steps_per_epoch) for key in stream.step_keys(step)]
    assert sorted(first) == sorted(second) == list(range(size))  # every entry once per epoch
    assert first != second  # a fresh permutation each epoch
    assert stream.kind_of(3) == ("image", 3)


# ------------------------------------------------- image files: the reduced-decode road
def _gradient_jpeg(path, width=1024, height=768):
    """Smooth ramps (red along x, green along y): any crop offset or scale error shows as a colour shift."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    from PIL import Image

    Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).astype(np.uint8)).save(path, quality=95)
    return path


def test_image_road_equals_the_tensor_road_on_a_png(shapes_tiny):
    from workbench.data.media import load_image

    png = next((shapes_tiny / "images").glob("*.png"))
    cfg = load_config(None, ["data.image_size=48"])
    transform = FrameTransform(cfg, train=False)
    assert torch.allclose(transform.image(str(png)), transform(load_image(png)), atol=1e-5)  # same uint8 resize


def test_reduced_decode_keeps_the_random_crop_where_the_full_decode_has_it(tmp_path):
    from workbench.data.media import load_image

    jpeg = _gradient_jpeg(tmp_path / "ramp.jpg")
    cfg = load_config(
        None, ["data.image_size=64", "augment.image=true", "augment.randaug_ops=0", "augment.crop_scale_min=0.3"]
    )
    transform = FrameTransform(cfg, train=True)
    full = load_image(jpeg)
    gaps, wrong = [], []
    for seed in range(12):
        torch.manual_seed(seed)
        fast = transform.image(str(jpeg))
        torch.manual_seed(seed)
        reference = transform(full)  # v2.RandomResizedCrop on the full decode, same RNG draws
        torch.manual_seed(seed + 100)
        other = transform(full)
        gaps.append((fast - reference).abs().mean().item())
        wrong.append((fast - other).abs().mean().item())
    # 64 px out of a >= 560 px box: the decode is 1/2..1/8 size; crops match to a fraction of a pixel
    assert max(gaps) < 0.05 and min(wrong) > 5 * max(gaps), (gaps, wrong)


def test_image_road_flip_mirrors_the_same_sample(tmp_path):
    jpeg = _gradient_jpeg(tmp_path / "ramp.jpg", 320, 240)
    transform = FrameTransform(load_config(None, ["data.image_size=64", "augment.image=true"]), train=True)
    torch.manual_seed(3)
    plain = transform.image(str(jpeg))
    torch.manual_seed(3)
    assert torch.equal(transform.image(str(jpeg), flip=True), plain.flip(-1))


def test_unreadable_image_file_is_a_data_error_naming_it(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match="unreadable image .*broken.jpg"):
        FrameTransform(load_config(None, []), train=False).image(str(bad))


def test_randaug_set_albef_changes_colours_color_free_never(tmp_path, one_thread):
    from PIL import Image

    from workbench.data.transforms import ALBEF_OPS, AlbefRandAugment

    assert set(AlbefRandAugment._AUGMENTATION_SPACE) == set(ALBEF_OPS)
    frames, _ = _one_object_frames("red", x=32)
    png = tmp_path / "red.png"
    Image.fromarray(frames[0].permute(1, 2, 0).numpy()).save(png)
    changed = {}
    for name in ("color_free", "albef"):
        cfg = load_config(
            None,
            [
                "data.image_size=64",
                "augment.image=true",
                "augment.crop_scale_min=1.0",
                "augment.randaug_ops=3",
                "augment.randaug_magnitude=15",
                f"augment.randaug_set={name}",
            ],
        )
        transform = FrameTransform(cfg, train=True)
        changed[name] = 0
        for seed in range(16):
            torch.manual_seed(seed)
            out = transform.image(str(png))
            rgb = (out * transform.std255 + transform.mean255).round().clamp(0, 255).to(torch.uint8)
            changed[name] += bool((_object_colour(rgb) - _object_colour(frames)).abs().max() > 12)
    assert changed["color_free"] == 0 and changed["albef"] > 0, changed


def _object_colour(frames: torch.Tensor) -> torch.Tensor:
    """Median colour of the pixels away from the background (28, 28, 28): edges blended by a shear do not move it."""
    pixels = frames[0].permute(1, 2, 0).reshape(-1, 3).float()
    return pixels[(pixels - 28).abs().max(1).values > 40].median(0).values
