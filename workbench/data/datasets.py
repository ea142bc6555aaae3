"""Torch datasets and the collate function that turns samples into INTERFACES.md batches.

A sample is a dict: `image` (float [T, 3, S, S]; an image is T=1), optional `text`
(a string, tokenised in `Collate`), ints (`image_id`, `label`) and tensors
(`answer_target`, `image2`). Datasets accept an index or `(index, sample_seed)`:
with a seed every random choice of that sample (caption, flip, word masking,
frames, crop, RandAugment) is drawn from it, so a batch does not depend on
worker count or on what was loaded before (see `stream.PretrainStream`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from workbench.data.media import load_image, load_masks, load_video
from workbench.data.readers import Entries, caption_key, read_answer_list, read_entries, resolve_media
from workbench.data.text_augment import mask_words, swap_left_right
from workbench.data.transforms import FrameTransform, flip_sample
from workbench.errors import ConfigError, DataError
from workbench.tasks import TASKS

VE_LABELS = ("entailment", "neutral", "contradiction")
NLVR_LABELS = ("False", "True")  # label 1 = the statement is true


def tokenize(tokenizer, texts: Sequence[str], max_text_len: int) -> dict[str, torch.Tensor]:
    """BERT-style ids and mask, padded to the longest text, truncated at `max_text_len`."""
    encoded = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_text_len, return_tensors="pt")
    return {"text_ids": encoded["input_ids"].long(), "text_mask": encoded["attention_mask"].long()}


class Collate:
    """Stack tensors, tokenise `text`, turn ints into a long tensor."""

    def __init__(self, tokenizer=None, max_text_len: int = 40):
        self.tokenizer, self.max_text_len = tokenizer, max_text_len

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        with _single_thread():
            for key in samples[0]:
                values = [sample[key] for sample in samples]
                if key == "text":
                    batch.update(tokenize(self.tokenizer, values, self.max_text_len))
                elif isinstance(values[0], torch.Tensor):
                    batch[key] = torch.stack(values)
                else:
                    batch[key] = torch.tensor(values, dtype=torch.long)
        return batch


def sample_rng(sample_seed: int | None) -> np.random.Generator:
    """The sample's own Generator; without a seed one drawn from torch's (worker-seeded) RNG."""
    if sample_seed is None:
        sample_seed = int(torch.randint(0, 2**31 - 1, ()))
    return np.random.default_rng(sample_seed)


class MediaDataset(Dataset):
    """Entries + frame loading. With data.on_bad_sample=skip an unreadable file is replaced by
    the next readable entry and counted in `load_failures` (of this process)."""

    media_key = "image"
    replace_unreadable = True  # False where a replacement would corrupt index maps (retrieval)

    def __init__(self, cfg, entries: Entries, *, augment: bool = False, random_frames: bool = False):
        self.cfg = cfg
        self.entries = entries.items
        self.skipped = entries.skipped  # bad entries dropped while reading
        self.load_failures = 0
        self.random_frames = random_frames
        self.transform = FrameTransform(cfg, train=augment)

    def __len__(self) -> int:
        return len(self.entries)

    def raw_frames(self, path: str, rng: np.random.Generator | None) -> torch.Tensor:
        """uint8 [T, 3, H, W]: the image (T=1) or `data.num_frames` sampled video frames."""
        if self.media_key == "video":
            return load_video(path, self.cfg.data.num_frames, rng if self.random_frames else None)
        return load_image(path)

    def frames(self, path: str, rng: np.random.Generator | None, seed: int | None) -> torch.Tensor:
        if self.media_key == "video":
            return self.finish(self.raw_frames(path, rng), seed)
        return self.finish_image(path, seed)

    def finish(self, frames: torch.Tensor, seed: int | None) -> torch.Tensor:
        """Apply the transform; with a seed its randomness comes from that seed only."""
        return _seeded(seed, self.transform, frames)

    def finish_image(self, source, seed: int | None, flip: bool = False) -> torch.Tensor:
        """An image file (path or binary file) through the transform's reduced-size decode road; a
        transform put in its place (fine-tune preloading keeps uint8 frames) gets the decoded frames."""
        road = getattr(self.transform, "image", None)
        if road is None:
            frames = load_image(source)
            return self.finish(frames.flip(-1) if flip else frames, seed)
        return _seeded(seed, road, source, flip)

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        with _single_thread():
            for offset in range(len(self)):
                try:
                    return self.sample((index + offset) % len(self), seed)
                except DataError:
                    if self.cfg.data.on_bad_sample != "skip" or not self.replace_unreadable:
                        raise
                    self.load_failures += 1
        raise DataError(f"no readable sample in {type(self).__name__} ({len(self)} entries)")


def _seeded(seed: int | None, fn, *args):
    """fn(*args) with torch's CPU RNG seeded by `seed` (and restored after); unseeded without."""
    if seed is None:
        return fn(*args)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also queues CUDA seeding
        return fn(*args)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Per-sample ops on small tensors only lose time to intra-op threads (tens of ms when
    cores are busy); DataLoader workers run single-threaded anyway, so the main process
    (data.num_workers=0) does the same while it loads a sample."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _dense_ids(raw_ids: Sequence[Any]) -> list[int]:
    """Raw ids (ints, strings or paths) -> 0..n-1 in order of first appearance."""
    mapping: dict[Any, int] = {}
    return [mapping.setdefault(raw, len(mapping)) for raw in raw_ids]


class CaptionDataset(MediaDataset):
    """Pre-training pairs: a random caption of the entry, optional flip and word masking.

    `caption_id` numbers caption strings (case and spacing ignored): two images
    sharing a caption get the same id, so ITC can count the pair as a positive. It
    is the id of the caption after a flip (which changes the words) and before word
    masking (a masked caption still describes the image its words came from).
    """

    def __init__(self, cfg, entries: Entries, media_key: str, mask_token: str, train: bool = True):
        super().__init__(cfg, entries, augment=train, random_frames=train)
        self.media_key, self.mask_token, self.train = media_key, mask_token, train
        self.image_ids = _dense_ids([e.get("image_id", e[media_key]) for e in self.entries])
        self.caption_key = caption_key
        self.caption_index: dict[str, int] = {}
        for entry in self.entries:
            for text in entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]:
                self.caption_index.setdefault(caption_key(text), len(self.caption_index))

    def caption_id(self, text: str, index: int) -> int:
        """Id of the caption string; a string no entry has (a flipped caption) gets one of its entry's own."""
        return self.caption_index.get(self.caption_key(text), len(self.caption_index) + index)

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        entry = self.entries[index]
        rng = sample_rng(seed)
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        text = captions[int(rng.integers(len(captions)))]
        video = self.raw_frames(entry[self.media_key], rng) if self.media_key == "video" else None
        image, text = self.augmented(entry[self.media_key], video, text, rng, seed)
        caption_id = self.caption_id(text, index)
        augment = self.cfg.augment
        if self.train and augment.text and augment.text_mask_ratio > 0:
            text = mask_words(text, augment.text_mask_ratio, self.mask_token, rng)
        return {"image": image, "text": text, "image_id": self.image_ids[index], "caption_id": caption_id}

    def augmented(self, source, video: torch.Tensor | None, text: str, rng: np.random.Generator, seed: int | None):
        """(float frames, caption) after the optional left-right flip: video frames given, else the image `source`."""
        flip = self.train and self.cfg.augment.flip and rng.random() < 0.5
        if video is None:
            return self.finish_image(source, seed, flip), swap_left_right(text) if flip else text
        if flip:
            video, text, _ = flip_sample(video, text)
        return self.finish(video, seed), text


class RetrievalDataset(MediaDataset):
    """Images (or videos) for retrieval evaluation, with their captions and index maps.

    `images[i]` has captions `texts[j] for j in img2txt[i]`; `txt2img[j]` is caption j's
    image. Items are images only: `{"image", "image_id": i}`; tokenise `texts` with
    `tokenize`. `objects[i]` lists ShapesWorld objects; `masks(i)` loads their masks.
    An unreadable image is an error even with on_bad_sample=skip: replacing it would
    shift the index maps (`workbench.data.check.check_dataset` finds such files first).
    """

    replace_unreadable = False

    def __init__(self, cfg, entries: Entries, media_key: str = "image"):
        super().__init__(cfg, entries)
        self.media_key = media_key
        self.images: list[str] = [e[media_key] for e in self.entries]
        self.texts: list[str] = []
        self.txt2img: list[int] = []
        self.img2txt: list[list[int]] = []
        for i, entry in enumerate(self.entries):
            captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
            self.img2txt.append(list(range(len(self.texts), len(self.texts) + len(captions))))
            self.texts += captions
            self.txt2img += [i] * len(captions)
        self.objects: list[list[dict]] = [e.get("objects", []) for e in self.entries]

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        return {"image": self.frames(self.images[index], None, seed), "image_id": index}

    def masks(self, index: int) -> torch.Tensor:
        """uint8 [K, H, W]: mask k belongs to `objects[index][k]` (via its `mask_index`)."""
        objects = self.objects[index]
        if not objects:
            raise DataError(f"{self.images[index]}: no objects with masks in this data set")
        where = f"{self.images[index]} objects[0].mask"
        stack = load_masks(resolve_media(objects[0]["mask"], self.cfg.data, where))
        return stack[[o["mask_index"] for o in objects]]


class VQADataset(MediaDataset):
    """Question + image; `answer_target` [A] = soft score of each answer in `answers`
    (ALBEF: each listed answer adds 1/len(answers); answers outside the list are ignored)."""

    def __init__(self, cfg, entries: Entries, answers: list[str]):
        super().__init__(cfg, entries)
        self.answers = answers
        self.answer_index = {a: i for i, a in enumerate(answers)}
        self.question_ids = [e["question_id"] for e in self.entries]

    def target(self, answers: list[str] | str) -> torch.Tensor:
        answers = answers if isinstance(answers, list) else [answers]
        target = torch.zeros(len(self.answers))
        for answer in answers:
            if answer in self.answer_index:
                target[self.answer_index[answer]] += 1.0 / len(answers)
        return target

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        entry = self.entries[index]
        return {
            "image": self.frames(entry["image"], None, seed),
            "text": entry["question"],
            "answer_target": self.target(entry["answer"]),
            "image_id": index,
        }


class NLVRDataset(MediaDataset):
    """Two images + a statement; label 1 = True."""

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        entry = self.entries[index]
        left, right = entry["images"]
        return {
            "image": self.frames(left, None, seed),
            "image2": self.frames(right, None, seed),
            "text": entry["sentence"],
            "label": NLVR_LABELS.index(entry["label"]),
            "image_id": index,
        }


class VEDataset(MediaDataset):
    """Image + hypothesis; label index in VE_LABELS (entailment, neutral, contradiction)."""

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        entry = self.entries[index]
        return {
            "image": self.frames(entry["image"], None, seed),
            "text": entry["sentence"],
            "label": VE_LABELS.index(entry["label"]),
            "image_id": index,
        }


def task_dataset(cfg, tokenizer, task: str, split: str) -> tuple[MediaDataset, Collate]:
    """(dataset, collate_fn) of a downstream task's split, read from `<data.root>/<task>_<split>.json`."""
    if task not in TASKS:
        raise ConfigError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    if split not in TASKS[task].splits:
        raise ConfigError(f"{task} split: {split!r} is not one of {', '.join(TASKS[task].splits)}")
    data = cfg.data
    collate = Collate(tokenizer, data.max_text_len)
    name = f"{task}_{split}.json"
    if task == "retrieval":
        return RetrievalDataset(cfg, read_entries(data, name, "retrieval")), collate
    if task == "video_retrieval":
        entries = read_entries(data, name, "video", min_frames=data.num_frames)
        return RetrievalDataset(cfg, entries, media_key="video"), collate
    if task == "vqa":
        return VQADataset(cfg, read_entries(data, name, "vqa"), read_answer_list(data)), collate
    if task == "nlvr":
        return NLVRDataset(cfg, read_entries(data, name, "nlvr")), collate
    return VEDataset(cfg, read_entries(data, name, "ve")), collate
