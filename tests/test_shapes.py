"""ShapesWorld: determinism, caching, splits, caption/mask truth, motion, language-prior balance."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data import shapes
from workbench.data.shapes_scene import BACKGROUND, COLORS, MOTIONS, SHAPES
from workbench.errors import ConfigError, DataError

COLOR = "|".join(COLORS)
SHAPE = "|".join(SHAPES)
NUMBER = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, name: str):
    return json.loads((root / name).read_text())


# ------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_other_seed_other_bytes(shapes_tiny, tmp_path):
    out = tmp_path / "sw"
    other = shapes.generate(out, seed=1, size="tiny")
    reference = _files(shapes_tiny)
    seed1 = _files(out)
    assert other["seed"] == 1 and other["data_hash"] != _load(shapes_tiny, "manifest.json")["data_hash"]
    assert seed1["pretrain.json"] != reference["pretrain.json"]
    assert seed1["images/000000.png"] != reference["images/000000.png"]

    again = shapes.generate(out, seed=0, size="tiny")  # replaces the seed-1 data set in place
    assert again == _load(shapes_tiny, "manifest.json")
    regenerated = _files(out)
    assert regenerated.keys() == reference.keys()
    assert [k for k in reference if regenerated[k] != reference[k]] == []
    assert not list(tmp_path.glob(".sw.tmp-*"))


def test_manifest_counts_and_hashes_describe_the_files(shapes_tiny):
    import hashlib

    manifest = _load(shapes_tiny, "manifest.json")
    assert (manifest["generator"], manifest["version"], manifest["seed"], manifest["size"]) == (
        "shapesworld",
        shapes.VERSION,
        0,
        "tiny",
    )
    for name, count in manifest["counts"].items():
        if name.endswith(".json"):
            assert len(_load(shapes_tiny, name)) == count, name
        else:
            assert len(list((shapes_tiny / name).iterdir())) == count, name
    for name, digest in manifest["files"].items():
        if not name.endswith("/"):
            assert hashlib.sha256((shapes_tiny / name).read_bytes()).hexdigest() == digest, name
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["data_hash"])
    assert manifest["counts"]["pretrain.json"] == shapes.PRESETS["tiny"].pretrain


def test_cached_manifest_is_returned_without_regenerating(shapes_tiny, monkeypatch):
    def must_not_build(*args):
        raise AssertionError("regenerated although the manifest matches")

    monkeypatch.setattr(shapes, "_build", must_not_build)
    assert shapes.generate(shapes_tiny, seed=0, size="tiny") == _load(shapes_tiny, "manifest.json")


def test_killed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def killed(root: Path, seed: int, size: str):
        (root / "pretrain.json").write_text("[")
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_build", killed)
    with pytest.raises(KeyboardInterrupt):
        shapes.generate(tmp_path / "sw", seed=0, size="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sw.lock"]


def test_refuses_to_overwrite_a_foreign_directory_and_bad_arguments(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a ShapesWorld directory"):
        shapes.generate(tmp_path / "mine", seed=0, size="tiny")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="'huge' is not one of tiny, default"):
        shapes.generate(tmp_path / "x", size="huge")


# ----------------------------------------------------------------------- splits
def _referenced(root: Path, split: str) -> set[str]:
    names = {"train": ["pretrain.json"], "val": ["retrieval_val.json"], "test": ["retrieval_test.json"]}[split]
    names += [f"{task}_{split}.json" for task in ("vqa", "nlvr", "ve")]
    images = set()
    for name in names:
        for entry in _load(root, name):
            images.update(entry.get("images", [entry.get("image")]))
    return images


def test_splits_are_disjoint_by_image_and_by_video(shapes_tiny):
    train, val, test = (_referenced(shapes_tiny, s) for s in shapes.SPLITS)
    assert train and val and test
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == _load(shapes_tiny, "manifest.json")["counts"]["images"]
    videos = {s: {e["video"] for e in _load(shapes_tiny, f"video_retrieval_{s}.json")} for s in shapes.SPLITS}
    assert not videos["train"] & videos["val"] and not videos["train"] & videos["test"]
    assert not videos["val"] & videos["test"]
    assert _load(shapes_tiny, "video_pretrain.json") == _load(shapes_tiny, "video_retrieval_train.json")


# ------------------------------------------------------------ captions and masks
def _check_caption(caption: str, objects: list[dict], px: int) -> None:
    by_name = {(o["color"], o["shape"]): o for o in objects}
    mentions = re.findall(rf"\b(?:(small|large) )?({COLOR}) ({SHAPE})\b", caption)
    mentions += [(s, c, sh) for s, sh, c in re.findall(rf"\b(?:(small|large) )?({SHAPE}) that is ({COLOR})\b", caption)]
    for size, color, shape in mentions:
        assert (color, shape) in by_name, f"{caption!r} names a {color} {shape} that is not in the image"
        assert size in ("", by_name[color, shape]["size"]), caption
    for a_c, a_s, rel, b_c, b_s in re.findall(
        rf"({COLOR}) ({SHAPE}) (?:is )?(left of|right of|above|below) (?:the|a) ({COLOR}) ({SHAPE})", caption
    ):
        ax0, ay0, ax1, ay1 = by_name[a_c, a_s]["bbox"]
        bx0, by0, bx1, by1 = by_name[b_c, b_s]["bbox"]
        assert {"left of": ax1 <= bx0, "right of": bx1 <= ax0, "above": ay1 <= by0, "below": by1 <= ay0}[rel], caption
    for color, shape, place in re.findall(
        rf"({COLOR}) ({SHAPE}) (?:is )?(?:on|at) the (left|right|top|bottom)", caption
    ):
        x0, y0, x1, y1 = by_name[color, shape]["bbox"]
        centre = (x0 + x1) / 2 if place in ("left", "right") else (y0 + y1) / 2
        assert centre < px / 2 if place in ("left", "top") else centre > px / 2, caption
    for number in re.findall(r"(?:there are|image with) (\w+) shapes", caption):
        assert NUMBER[number] == len(objects), caption
    for number, color in re.findall(rf"there (?:are|is) (\w+) ({COLOR}) shapes?", caption):
        assert NUMBER[number] == sum(o["color"] == color for o in objects), caption
    assert mentions or re.search(r"shapes?\.", caption), f"caption names nothing checkable: {caption!r}"


def test_captions_name_only_objects_in_the_image_and_masks_are_their_pixels(shapes_tiny):
    px = _load(shapes_tiny, "manifest.json")["image_size"]
    checked = 0
    for split in ("val", "test"):
        for entry in _load(shapes_tiny, f"retrieval_{split}.json"):
            image = np.asarray(Image.open(shapes_tiny / entry["image"]))
            masks = np.load(shapes_tiny / entry["objects"][0]["mask"])
            assert masks.shape == (len(entry["objects"]), px, px) and masks.max(initial=0) == 1
            assert masks.sum(0).max() == 1  # no pixel belongs to two objects
            for obj in entry["objects"]:
                mask = masks[obj["mask_index"]].astype(bool)
                rows, cols = np.nonzero(mask)
                assert len(rows) > 0
                assert obj["bbox"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
                assert (image[mask] == COLORS[obj["color"]]).all()
            assert (image[masks.sum(0) == 0] == BACKGROUND).all()
            assert len(entry["caption"]) == 5
            for caption in entry["caption"]:
                _check_caption(caption, entry["objects"], px)
                checked += 1
    assert checked == 5 * sum(shapes.PRESETS["tiny"].retrieval.values())


def test_retrieval_eval_captions_identify_their_image(shapes_tiny):
    """Val/test: every caption names every object (size, colour, shape, grid cell) and no
    caption string belongs to two images or videos; pre-training may keep generic ones."""
    from workbench.data.check import duplicate_caption_rate
    from workbench.data.shapes_language import GRID_PLACES

    px = _load(shapes_tiny, "manifest.json")["image_size"]
    places = "|".join(sorted(GRID_PLACES.values(), key=len, reverse=True))
    for split in ("val", "test"):
        entries = _load(shapes_tiny, f"retrieval_{split}.json")
        owners: dict[str, set] = defaultdict(set)
        for entry in entries:
            for caption in entry["caption"]:
                owners[caption].add(entry["image"])
                named = re.findall(rf"a (small|large) ({COLOR}) ({SHAPE}) ({places})", caption)
                assert sorted(named[k][:3] for k in range(len(named))) == sorted(
                    (o["size"], o["color"], o["shape"]) for o in entry["objects"]
                ), caption
                for _size, color, shape, place in named:
                    x0, y0, x1, y1 = next(
                        o["bbox"] for o in entry["objects"] if (o["color"], o["shape"]) == (color, shape)
                    )
                    cell = (min(2, 3 * ((y0 + y1 - 1) // 2) // px), min(2, 3 * ((x0 + x1 - 1) // 2) // px))
                    assert GRID_PLACES[cell] == place, caption
            assert len(set(entry["caption"])) == 5
        assert all(len(images) == 1 for images in owners.values())
        assert duplicate_caption_rate(entries, "image") == 0.0
        videos = _load(shapes_tiny, f"video_retrieval_{split}.json")
        assert duplicate_caption_rate(videos, "video") == 0.0
    assert duplicate_caption_rate(_load(shapes_tiny, "pretrain.json"), "image") > 0  # generic captions stay


def test_video_captions_describe_the_motion(shapes_tiny):
    low, high = shapes.PRESETS["tiny"].video_frames
    moving = 0
    for split in shapes.SPLITS:
        for entry in _load(shapes_tiny, f"video_retrieval_{split}.json"):
            video = np.load(shapes_tiny / entry["video"])
            assert video.dtype == np.uint8 and video.ndim == 4 and video.shape[-1] == 3
            assert low <= len(video) <= high
            clauses = re.findall(
                rf"the ({COLOR}) ({SHAPE}) (?:moves|is moving|stays|does not) (left|right|up|down|still|move)",
                entry["caption"],
            )
            assert clauses and len(clauses) == entry["caption"].count(" and ") + 1, entry["caption"]
            colors = [c for c, _, _ in clauses]
            for color, _, direction in clauses:
                if colors.count(color) > 1:
                    continue  # two objects share the colour: centroids would mix
                centres = [np.argwhere((frame == COLORS[color]).all(-1)).mean(0) for frame in (video[0], video[-1])]
                dy, dx = centres[1] - centres[0]
                want_dx, want_dy = MOTIONS["still" if direction == "move" else direction]
                assert np.sign(round(dx)) == want_dx and np.sign(round(dy)) == want_dy, (entry, dx, dy)
                moving += direction not in ("still", "move")
    assert moving > 0


def test_every_text_is_in_the_tokenizer_vocabulary(shapes_tiny):
    from workbench.config import DataConfig
    from workbench.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(DataConfig(root=str(shapes_tiny)))
    texts = []
    for path in shapes_tiny.glob("*.json"):
        for entry in _load(shapes_tiny, path.name) if path.name != "manifest.json" else []:
            if isinstance(entry, dict):
                for key in ("caption", "question", "sentence"):
                    value = entry.get(key, [])
                    texts += value if isinstance(value, list) else [value]
    assert len(texts) > 500
    ids = tokenizer(texts)["input_ids"]
    assert all(tokenizer.unk_token_id not in row for row in ids)
    assert len(tokenizer) < 100  # a small closed vocabulary


# --------------------------------------------------------- language-prior balance
def _bag_of_ngrams(texts: list[str], vocab: dict[str, int]) -> torch.Tensor:
    features = torch.zeros(len(texts), len(vocab))
    for row, text in enumerate(texts):
        words = re.findall(r"\w+", text)
        for gram in words + [" ".join(p) for p in pairwise(words)]:
            if gram in vocab:
                features[row, vocab[gram]] += 1
    return features


def _blind_accuracy(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> float:
    """Accuracy on `test` of a logistic regression on unigrams+bigrams of the text alone."""
    labels = sorted({label for _, label in train})
    grams = sorted(
        {g for text, _ in train for w in [re.findall(r"\w+", text)] for g in w + [" ".join(p) for p in pairwise(w)]}
    )
    vocab = {g: i for i, g in enumerate(grams)}
    x_train, x_test = _bag_of_ngrams([t for t, _ in train], vocab), _bag_of_ngrams([t for t, _ in test], vocab)
    y_train = torch.tensor([labels.index(label) for _, label in train])
    y_test = torch.tensor([labels.index(label) for _, label in test])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(len(vocab), len(labels))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        for _ in range(150):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train), y_train).backward()
            optimizer.step()
        return (model(x_test).argmax(1) == y_test).float().mean().item()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes_tasks_mid(tmp_path_factory):
    """Only the VQA/NLVR/VE part of ShapesWorld, a few hundred samples per split."""
    preset = shapes.Preset(
        image_px=32,
        pretrain=0,
        retrieval={},
        videos={s: 0 for s in shapes.SPLITS},
        vqa={"train": 400, "val": 0, "test": 300},
        nlvr={"train": 200, "val": 0, "test": 200},
        ve={"train": 300, "val": 0, "test": 300},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(shapes.PRESETS, "mid", preset)
        root = tmp_path_factory.mktemp("mid") / "sw"
        shapes.generate(root, seed=3, size="mid")
    return root


@pytest.mark.parametrize(
    ("task", "text_key", "chance"),
    [("vqa", "question", 1 / 2), ("nlvr", "sentence", 1 / 2), ("ve", "sentence", 1 / 3)],
)
def test_text_only_baseline_is_at_chance(shapes_tasks_mid, task, text_key, chance):
    def pairs(split: str) -> list[tuple[str, str]]:
        rows = _load(shapes_tasks_mid, f"{task}_{split}.json")
        if task == "vqa":
            rows = [r for r in rows if r["template"] in ("exists", "relation")]
        return [(r[text_key], r["answer"][0] if task == "vqa" else r["label"]) for r in rows]

    train, test = pairs("train"), pairs("test")
    assert len(test) >= 100
    # the same text occurs equally often under every label, in every split ...
    for rows in (train, test):
        per_text: dict[str, Counter] = defaultdict(Counter)
        for text, label in rows:
            per_text[text][label] += 1
        assert all(len(c) == round(1 / chance) and len(set(c.values())) == 1 for c in per_text.values())
    # ... so a text-only classifier cannot beat chance on held-out data
    assert abs(_blind_accuracy(train, test) - chance) < 0.03


def test_the_blind_baseline_learns_what_text_does_tell(shapes_tasks_mid):
    """Control: the same classifier predicts a question's template from its text."""
    rows = {
        split: [(r["question"], r["template"]) for r in _load(shapes_tasks_mid, f"vqa_{split}.json")]
        for split in ("train", "test")
    }
    assert _blind_accuracy(rows["train"], rows["test"]) > 0.95
