"""Readers (good and every kind of bad file), tokenizer, task datasets and collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.config import DataConfig, load_config
from workbench.data.datasets import VE_LABELS, CaptionDataset, Collate, task_dataset, tokenize
from workbench.data.readers import read_answer_list, read_entries
from workbench.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, load_tokenizer
from workbench.errors import ConfigError, DataError

KINDS = {  # kind -> a ShapesWorld file of that kind and its entry count in `tiny`
    "pretrain": ("pretrain.json", 64),
    "retrieval": ("retrieval_test.json", 32),
    "video": ("video_retrieval_val.json", 8),
    "vqa": ("vqa_val.json", 24),
    "nlvr": ("nlvr_test.json", 16),
    "ve": ("ve_train.json", 48),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_reads_every_shapesworld_kind(shapes_tiny, kind):
    name, count = KINDS[kind]
    entries = read_entries(DataConfig(root=str(shapes_tiny)), [name], kind)
    assert len(entries.items) == count and entries.skipped == 0
    raw = json.loads((shapes_tiny / name).read_text())
    for entry, original in zip(entries.items, raw, strict=True):
        for key in ("image", "video"):
            if key in entry:
                assert entry[key] == str(shapes_tiny / original[key]) and Path(entry[key]).is_file()
        if "images" in entry:
            assert entry["images"] == [str(shapes_tiny / p) for p in original["images"]]
        assert {k: v for k, v in entry.items() if k not in ("image", "images", "video")} == {
            k: v for k, v in original.items() if k not in ("image", "images", "video")
        }


# ---------------------------------------------------------------- bad files
@pytest.fixture
def root(tmp_path) -> Path:
    """A tiny real-data-like root: one good image, one corrupt image, one video."""
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "img" / "good.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    np.save(tmp_path / "img" / "clip.npy", np.zeros((3, 8, 8, 3), np.uint8))
    return tmp_path


def _write(root: Path, name: str, data) -> str:
    (root / name).write_text(data if isinstance(data, str) else json.dumps(data))
    return name


def _cfg(root: Path, **fields) -> DataConfig:
    return DataConfig(root=str(root), **fields)


def _error(root: Path, data, kind: str = "pretrain", **fields) -> str:
    name = _write(root, "data.json", data)
    with pytest.raises(DataError) as info:
        read_entries(_cfg(root, **fields), [name], kind)
    message = str(info.value)
    assert "\n" not in message
    return message


GOOD = {"image": "img/good.png", "caption": ["a red square."]}


def test_missing_file_names_the_path(root):
    with pytest.raises(DataError, match=f"data file not found: {root / 'nope.json'}"):
        read_entries(_cfg(root), ["nope.json"], "pretrain")


def test_invalid_json_and_not_a_list(root):
    assert _error(root, '[{"image": "img/good.png",').startswith(f"{root / 'data.json'}: invalid JSON at line 1")
    assert _error(root, {"image": "x"}) == f"{root / 'data.json'}: expected a JSON list of entries, got dict"


def test_missing_field_names_file_index_and_field(root):
    message = _error(root, [GOOD, {"image": "img/good.png"}])
    assert message == f"{root / 'data.json'}[1]: missing field 'caption'"
    assert _error(root, [GOOD, "just a string"]) == f"{root / 'data.json'}[1]: expected an object with fields, got str"


def test_wrong_type_names_file_index_field_and_value(root):
    message = _error(root, [GOOD, GOOD, {"image": "img/good.png", "caption": 5}])
    assert message == f"{root / 'data.json'}[2].caption: expected a string or a non-empty list of strings, got int 5"
    message = _error(root, [{"images": ["img/good.png"], "sentence": "s", "label": "True"}], kind="nlvr")
    assert message.startswith(f"{root / 'data.json'}[0].images: expected a list of 2 strings")
    message = _error(root, [{"image": "img/good.png", "sentence": "s", "label": "maybe"}], kind="ve")
    assert message == f"{root / 'data.json'}[0].label: 'maybe' is not one of entailment, neutral, contradiction"


def test_missing_image_names_the_resolved_path(root):
    message = _error(root, [GOOD, {"image": "img/gone.png", "caption": "x"}])
    assert message == f"{root / 'data.json'}[1].image: file not found: {root / 'img' / 'gone.png'}"


def test_paths_may_not_climb_out_of_the_image_root(root):
    message = _error(root, [{"image": "../../etc/passwd", "caption": "x"}])
    assert message.startswith(f"{root / 'data.json'}[0].image: path '../../etc/passwd' climbs out of the image root")
    message = _error(root, [{"image": "img/../../x.png", "caption": "x"}])
    assert "climbs out" in message


def test_absolute_paths_refused_unless_allowed(root):
    absolute = str(root / "img" / "good.png")
    message = _error(root, [{"image": absolute, "caption": "x"}])
    assert message == (
        f"{root / 'data.json'}[0].image: absolute path {absolute!r} refused — "
        "set data.allow_absolute_paths=true to allow it"
    )
    name = _write(root, "abs.json", [{"image": absolute, "caption": "x"}])
    entries = read_entries(_cfg(root, allow_absolute_paths=True), [name], "pretrain")
    assert entries.items[0]["image"] == absolute


def test_image_root_is_where_relative_paths_resolve(root):
    name = _write(root, "data.json", [{"image": "good.png", "caption": "x"}])
    entries = read_entries(_cfg(root, image_root=str(root / "img")), [name], "pretrain")
    assert entries.items[0]["image"] == str(root / "img" / "good.png")


def test_skip_mode_drops_and_counts_bad_entries(root):
    bad = [{"image": "img/gone.png", "caption": "x"}, {"image": "../x", "caption": "x"}, {"caption": "x"}, 7]
    name = _write(root, "data.json", [GOOD, *bad, GOOD])
    entries = read_entries(_cfg(root, on_bad_sample="skip"), [name], "pretrain")
    assert (len(entries.items), entries.skipped) == (2, 4)
    dataset = CaptionDataset(load_config(None, {"data.root": str(root)}), entries, "image", "[MASK]")
    assert dataset.skipped == 4
    _write(root, "all_bad.json", bad)
    with pytest.raises(DataError, match=r"no usable entries in .*all_bad.json \(4 bad entries skipped; the first: "):
        read_entries(_cfg(root, on_bad_sample="skip"), ["all_bad.json"], "pretrain")


def test_unreadable_image_errors_or_is_replaced_in_skip_mode(root):
    name = _write(root, "data.json", [{"image": "img/broken.png", "caption": "x"}, GOOD])
    for mode in ("error", "skip"):
        cfg = load_config(None, {"data.root": str(root), "data.on_bad_sample": mode, "data.image_size": 8})
        dataset = CaptionDataset(cfg, read_entries(cfg.data, [name], "pretrain"), "image", "[MASK]")
        if mode == "error":
            with pytest.raises(DataError, match=f"^unreadable image {root / 'img' / 'broken.png'}: "):
                dataset[0]
        else:
            sample = dataset[(0, 1)]
            assert sample["text"] == "a red square." and dataset.load_failures == 1
    # retrieval keeps image indices fixed, so an unreadable image stays an error
    _write(root, "retrieval_test.json", [{"image": "img/broken.png", "caption": ["x"]}, GOOD])
    cfg = load_config(None, {"data.root": str(root), "data.on_bad_sample": "skip", "data.image_size": 8})
    retrieval, _ = task_dataset(cfg, None, "retrieval", "test")
    with pytest.raises(DataError, match="unreadable image"):
        retrieval[0]


def test_video_shorter_than_num_frames(root):
    name = _write(root, "videos.json", [{"video": "img/clip.npy", "caption": "x"}])
    with pytest.raises(
        DataError, match=r"videos.json\[0\].video: .*clip.npy has 3 frames, fewer than data.num_frames=4"
    ):
        read_entries(_cfg(root), [name], "video", min_frames=4)
    assert len(read_entries(_cfg(root), [name], "video", min_frames=3).items) == 1
    np.save(root / "img" / "long.npy", np.zeros((5, 8, 8, 3), np.uint8))
    mixed = _write(
        root, "mixed.json", [{"video": "img/clip.npy", "caption": "x"}, {"video": "img/long.npy", "caption": "y"}]
    )
    entries = read_entries(_cfg(root, on_bad_sample="skip"), [mixed], "video", min_frames=4)
    assert [e["caption"] for e in entries.items] == ["y"] and entries.skipped == 1


def test_answer_list_must_be_strings(root):
    _write(root, "vqa_answers.json", ["yes", 3])
    with pytest.raises(DataError, match=r"vqa_answers.json\[1\]: expected a string answer, got int 3"):
        read_answer_list(_cfg(root))


# ---------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip_and_bert_template(shapes_tiny):
    tokenizer = load_tokenizer(DataConfig(root=str(shapes_tiny)))
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    text = "the red circle is left of the blue square."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "[CLS]",
        "the",
        "red",
        "circle",
        "is",
        "left",
        "of",
        "the",
        "blue",
        "square",
        ".",
        "[SEP]",
    ]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer("The RED zebra?")["input_ids"][1:-1] == [
        tokenizer.convert_tokens_to_ids(t) for t in ("the", "red", "[UNK]", "?")
    ]
    explicit = load_tokenizer(DataConfig(root="/nowhere", tokenizer=str(shapes_tiny / "tokenizer")))
    assert explicit(text)["input_ids"] == ids


def test_missing_tokenizer_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=f"tokenizer not found: looked in {tmp_path / 'tokenizer'} "):
        load_tokenizer(DataConfig(root=str(tmp_path)))


def test_tokenize_pads_to_longest_and_truncates():
    tokenizer = build_tokenizer(["a", "b", "c", "."])
    batch = tokenize(tokenizer, ["a b.", "a"], max_text_len=40)
    assert batch["text_ids"].tolist() == [[2, 6, 7, 5, 3], [2, 6, 3, 0, 0]]  # "." = 5, a = 6, b = 7
    assert batch["text_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    short = tokenize(tokenizer, ["a b c a b c"], max_text_len=4)
    assert short["text_ids"].tolist() == [[2, 6, 7, 3]]


# ------------------------------------------------------------ task datasets
def _tiny_cfg(root: Path, *extra: str):
    return load_config(None, [f"data.root={root}", *extra])


def test_task_batches_follow_the_interface(shapes_tiny):
    cfg = _tiny_cfg(shapes_tiny, "data.num_frames=4")
    tokenizer = load_tokenizer(cfg.data)
    size = cfg.data.image_size
    expected = {
        "retrieval": {"image": (3, 1, 3, size, size), "image_id": (3,)},
        "video_retrieval": {"image": (3, 4, 3, size, size), "image_id": (3,)},
        "vqa": {"image": (3, 1, 3, size, size), "answer_target": (3, 17), "image_id": (3,)},
        "nlvr": {"image": (3, 1, 3, size, size), "image2": (3, 1, 3, size, size), "label": (3,), "image_id": (3,)},
        "ve": {"image": (3, 1, 3, size, size), "label": (3,), "image_id": (3,)},
    }
    for task, shapes_ in expected.items():
        dataset, collate = task_dataset(cfg, tokenizer, task, "test")
        batch = collate([dataset[i] for i in range(3)])
        text_keys = {"text_ids", "text_mask"} if "retrieval" not in task else set()
        assert set(batch) == set(shapes_) | text_keys, task
        for key, shape in shapes_.items():
            assert tuple(batch[key].shape) == shape, (task, key)
        for key in text_keys | {"label", "image_id"} & set(batch):
            assert batch[key].dtype == torch.long
        if text_keys:
            assert (batch["text_ids"][:, 0] == tokenizer.cls_token_id).all()
    with pytest.raises(ConfigError, match="retrieval split: 'train' is not one of val, test"):
        task_dataset(cfg, tokenizer, "retrieval", "train")
    with pytest.raises(ConfigError, match="task: 'vqa2' is not one of"):
        task_dataset(cfg, tokenizer, "vqa2", "test")


def test_retrieval_index_maps_and_masks(shapes_tiny):
    cfg = _tiny_cfg(shapes_tiny)
    dataset, _ = task_dataset(cfg, None, "retrieval", "val")
    raw = json.loads((shapes_tiny / "retrieval_val.json").read_text())
    assert dataset.images == [str(shapes_tiny / e["image"]) for e in raw]
    assert dataset.texts == [c for e in raw for c in e["caption"]]
    assert dataset.txt2img == [i for i, e in enumerate(raw) for _ in e["caption"]]
    assert dataset.img2txt[1] == [5, 6, 7, 8, 9]
    masks = dataset.masks(1)
    assert masks.shape == (len(raw[1]["objects"]), 64, 64)
    x0, y0, x1, y1 = raw[1]["objects"][0]["bbox"]
    assert masks[0].sum() > 0 and masks[0, y0:y1, x0:x1].sum() == masks[0].sum()


def test_vqa_soft_targets_and_labels(root):
    _write(root, "vqa_answers.json", ["yes", "no", "red"])
    _write(
        root,
        "vqa_test.json",
        [
            {
                "question_id": 7,
                "image": "img/good.png",
                "question": "is it red?",
                "answer": ["yes", "no", "yes", "odd"],
            },
            {"question_id": "q8", "image": "img/good.png", "question": "what color?", "answer": "red"},
        ],
    )
    _write(root, "ve_test.json", [{"image": "img/good.png", "sentence": "s", "label": label} for label in VE_LABELS])
    _write(
        root,
        "nlvr_test.json",
        [{"images": ["img/good.png"] * 2, "sentence": "s", "label": label} for label in ("True", "False")],
    )
    cfg = _tiny_cfg(root, "data.image_size=8")
    tokenizer = build_tokenizer(["is", "it", "red", "what", "color", "?", "s"])
    vqa, collate = task_dataset(cfg, tokenizer, "vqa", "test")
    batch = collate([vqa[0], vqa[1]])
    assert batch["answer_target"].tolist() == [[0.5, 0.25, 0.0], [0.0, 0.0, 1.0]]
    assert vqa.answers == ["yes", "no", "red"] and vqa.question_ids == [7, "q8"]
    ve, collate = task_dataset(cfg, tokenizer, "ve", "test")
    assert collate([ve[i] for i in range(3)])["label"].tolist() == [0, 1, 2]
    nlvr, collate = task_dataset(cfg, tokenizer, "nlvr", "test")
    assert collate([nlvr[0], nlvr[1]])["label"].tolist() == [1, 0]


def test_collate_stacks_and_converts():
    batch = Collate()([{"image": torch.ones(1, 3, 2, 2), "label": 2}, {"image": torch.zeros(1, 3, 2, 2), "label": 0}])
    assert batch["image"].shape == (2, 1, 3, 2, 2) and batch["label"].tolist() == [2, 0]
    assert batch["label"].dtype == torch.long


# -------------------------------------------------------------------- check
def test_check_dataset_reports_everything_wrong(shapes_tiny, root):
    from workbench.data.check import check_dataset

    cfg = _tiny_cfg(shapes_tiny, "eval.tasks=[retrieval,vqa]", "eval.split=val", "data.max_text_len=8")
    summary = check_dataset(cfg, load_tokenizer(cfg.data))
    assert summary["ok"] and summary["missing_files"] == []
    assert sorted(summary["files"]) == ["pretrain.json", "retrieval_val.json", "vqa_train.json", "vqa_val.json"]
    pretrain = summary["files"]["pretrain.json"]
    assert (pretrain["entries"], pretrain["bad_entries"], pretrain["unreadable"]) == (64, 0, 0)
    assert pretrain["text_tokens"]["max"] > 8 and pretrain["truncated"] > 0

    _write(root, "pretrain.json", [GOOD, {"image": "img/broken.png", "caption": "x"}, {"caption": "x"}])
    summary = check_dataset(_tiny_cfg(root, "eval.tasks=[ve]"))
    assert not summary["ok"] and summary["missing_files"] == [str(root / "ve_test.json"), str(root / "ve_train.json")]
    report = summary["files"]["pretrain.json"]
    assert (report["entries"], report["bad_entries"], report["unreadable"]) == (2, 1, 1)
    assert report["problems"][0] == f"{root / 'pretrain.json'}[2]: missing field 'image'"
    assert report["problems"][1].startswith(f"unreadable image {root / 'img' / 'broken.png'}")
    assert report["text_words"] == {"min": 1, "mean": 2.0, "max": 3}


# ------------------------------------------------------------------ prepare
def test_ensure_data_generates_only_where_allowed_and_data_hash(shapes_tiny, root, tmp_path_factory):
    from workbench.data.prepare import data_hash, ensure_data

    manifest = json.loads((shapes_tiny / "manifest.json").read_text())
    tiny = DataConfig(root=str(shapes_tiny), shapes_size="tiny")
    assert ensure_data(tiny) == manifest and data_hash(tiny) == manifest["data_hash"]
    assert ensure_data(_cfg(root)) is None  # real data: never overwritten
    assert sorted(p.name for p in root.iterdir()) == ["img"]
    with pytest.raises(DataError, match="does not exist"):
        ensure_data(_cfg(root / "absent", generate=False))
    _write(root, "pretrain.json", [GOOD])
    before = data_hash(_cfg(root))
    _write(root, "pretrain.json", [GOOD, GOOD])
    assert data_hash(_cfg(root)) != before
