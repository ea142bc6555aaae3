"""ShapesWorld: generate the embedded data set to disk in the real-data formats.

`generate(out, seed, size)` writes images, masks, videos, captions, VQA, NLVR, VE
and a tokenizer (layout in INTERFACES.md "Data on disk"), then `manifest.json`.
Same seed and size => the same bytes in every file. A second call with the same
generator version, seed and size returns the cached manifest. Generation happens
in a temporary sibling directory that is renamed into place, under a file lock, so
a killed run leaves nothing half-written and concurrent runs generate once.
Every item draws from its own Generator seeded by (seed, source, split, index).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data import data_guard, shapes_tasks
from workbench.data.shapes_language import (
    answer_list,
    captions,
    identifying_captions,
    scene_key,
    video_caption,
    vocabulary,
)
from workbench.data.shapes_scene import Obj, mask_box, render, render_video, sample_motion_scene, sample_scene
from workbench.data.tokenizer import build_tokenizer
from workbench.errors import ConfigError, DataError

GENERATOR = "shapesworld"
VERSION = "2"  # 2: identifying retrieval captions, unique per val/test image and video
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Preset:
    """How much of everything one `size` generates (counts per split)."""

    image_px: int
    pretrain: int  # train-split captioned images
    retrieval: dict[str, int]  # val/test captioned images (with object masks)
    videos: dict[str, int]
    vqa: dict[str, int]  # questions
    nlvr: dict[str, int]  # statements about image pairs
    ve: dict[str, int]  # image-sentence pairs
    video_frames: tuple[int, int] = (4, 8)  # inclusive range of frames per video
    video_objects: tuple[int, int] = (1, 2)
    video_speed: tuple[int, int] = (2, 3)  # px per frame
    max_objects: int = 4


PRESETS = {
    "tiny": Preset(
        image_px=64,
        pretrain=64,
        retrieval={"val": 32, "test": 32},
        videos={"train": 16, "val": 8, "test": 8},
        vqa={"train": 48, "val": 24, "test": 24},
        nlvr={"train": 32, "val": 16, "test": 16},
        ve={"train": 48, "val": 24, "test": 24},
    ),
    "default": Preset(
        image_px=64,
        pretrain=4000,
        retrieval={"val": 200, "test": 200},
        videos={"train": 300, "val": 100, "test": 100},
        vqa={"train": 3000, "val": 600, "test": 600},
        nlvr={"train": 2000, "val": 500, "test": 500},
        ve={"train": 3000, "val": 600, "test": 600},
    ),
}
_SOURCES = {"pretrain": 1, "retrieval": 2, "video": 3, "vqa": 4, "nlvr": 5, "ve": 6}


def item_rng(seed: int, source: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SOURCES[source], SPLITS.index(split), index])


def dump_json(data: Any) -> bytes:
    """The one JSON encoding used for every file (fixed key order and indentation)."""
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class _Writer:
    """Writes files under a root, remembering each file's sha256 and the next ids."""

    def __init__(self, root: Path, px: int):
        self.root, self.px = root, px
        self.hashes: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.next_image = 0
        self.next_video = 0
        for folder in ("images", "masks", "videos"):
            (root / folder).mkdir(parents=True)

    def file(self, rel: str, data: bytes) -> str:
        (self.root / rel).write_bytes(data)
        self.hashes[rel] = hashlib.sha256(data).hexdigest()
        return rel

    def json(self, rel: str, entries: list) -> None:
        self.file(rel, dump_json(entries))
        self.counts[rel] = len(entries)

    def image(self, scene: list[Obj], with_masks: bool = False) -> tuple[str, int, list[dict]]:
        """Render one scene; returns (relative path, image id, objects with masks if asked)."""
        image_id = self.next_image
        self.next_image += 1
        picture, masks = render(scene, self.px)
        path = self.file(f"images/{image_id:06d}.png", _png(picture))
        objects = []
        if with_masks:
            mask_path = self.file(f"masks/{image_id:06d}.npy", _npy(masks))
            objects = [
                {
                    "shape": o.shape,
                    "color": o.color,
                    "size": o.size,
                    "bbox": mask_box(masks[k]),
                    "mask": mask_path,
                    "mask_index": k,
                }
                for k, o in enumerate(scene)
            ]
        return path, image_id, objects

    def video(self, frames: np.ndarray) -> str:
        video_id = self.next_video
        self.next_video += 1
        return self.file(f"videos/{video_id:05d}.npy", _npy(frames))


# ------------------------------------------------------------------- sources
UNIQUE_TRIES = 50  # scenes drawn per item before a duplicate description is accepted


def _captioned(
    writer: _Writer, preset: Preset, seed: int, source: str, split: str, count: int, with_objects: bool
) -> list[dict]:
    """Captioned images. Retrieval splits get identifying captions, and a scene whose
    description another image of the split already has is redrawn, so no caption
    string belongs to two images; pre-training keeps generic captions too."""
    entries = []
    seen: set[frozenset] = set()
    px = preset.image_px
    for index in range(count):
        rng = item_rng(seed, source, split, index)
        for _ in range(UNIQUE_TRIES):
            scene = sample_scene(rng, px, int(rng.integers(1, preset.max_objects + 1)))
            if source != "retrieval" or scene_key(scene, px) not in seen:
                break
        seen.add(scene_key(scene, px))
        texts = identifying_captions(rng, scene, px) if source == "retrieval" else captions(rng, scene, px)
        path, image_id, objects = writer.image(scene, with_masks=with_objects)
        entry = {"image": path, "caption": texts, "image_id": image_id}
        if with_objects:
            entry["objects"] = objects
        entries.append(entry)
    return entries


def _videos(writer: _Writer, preset: Preset, seed: int, split: str) -> list[dict]:
    """Moving-object videos; in val/test a video whose caption another video already has is redrawn."""
    entries = []
    seen: set[frozenset] = set()
    for index in range(preset.videos[split]):
        rng = item_rng(seed, "video", split, index)
        for _ in range(UNIQUE_TRIES):
            frames = int(rng.integers(preset.video_frames[0], preset.video_frames[1] + 1))
            n = int(rng.integers(preset.video_objects[0], preset.video_objects[1] + 1))
            speed = tuple(max(1, round(v * preset.image_px / 64)) for v in preset.video_speed)
            start, motions, velocities = sample_motion_scene(rng, preset.image_px, n, frames, speed)
            key = frozenset((o.name, motion) for o, motion in zip(start, motions, strict=True))
            if split == "train" or key not in seen:
                break
        seen.add(key)
        path = writer.video(render_video(start, velocities, frames, preset.image_px))
        entries.append({"video": path, "caption": video_caption(rng, start, motions)})
    return entries


def _task(
    writer: _Writer,
    preset: Preset,
    seed: int,
    source: str,
    split: str,
    unit: Callable[[np.random.Generator, int], list[shapes_tasks.TaskSample]],
) -> list[dict]:
    """Units (balanced groups of samples) until the split's count is reached; groups stay whole."""
    entries: list[dict] = []
    index = 0
    while len(entries) < getattr(preset, source)[split]:
        rng = item_rng(seed, source, split, index)
        index += 1
        for sample in unit(rng, preset.image_px):
            paths = [writer.image(scene)[0] for scene in sample.scenes]
            entry = dict(sample.fields)
            if source == "nlvr":
                entry["images"] = paths
            else:
                entry["image"] = paths[0]
            if source == "vqa":
                entry["question_id"] = len(entries) + 1_000_000 * SPLITS.index(split)
            entries.append(entry)
    return entries


def _build(root: Path, seed: int, size: str) -> dict:
    preset = PRESETS[size]
    writer = _Writer(root, preset.image_px)
    writer.json("pretrain.json", _captioned(writer, preset, seed, "pretrain", "train", preset.pretrain, False))
    for split, count in preset.retrieval.items():
        writer.json(f"retrieval_{split}.json", _captioned(writer, preset, seed, "retrieval", split, count, True))
    for split in SPLITS:
        videos = _videos(writer, preset, seed, split)
        writer.json(f"video_retrieval_{split}.json", videos)
        if split == "train":
            writer.json("video_pretrain.json", videos)
    units = {"vqa": shapes_tasks.vqa_unit, "nlvr": shapes_tasks.nlvr_unit, "ve": shapes_tasks.ve_unit}
    for source, unit in units.items():
        for split in SPLITS:
            writer.json(f"{source}_{split}.json", _task(writer, preset, seed, source, split, unit))
    writer.json("vqa_answers.json", answer_list())
    build_tokenizer(vocabulary()).save_pretrained(str(root / "tokenizer"))
    for path in sorted((root / "tokenizer").iterdir()):
        writer.hashes[f"tokenizer/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _manifest(writer, seed, size, preset)


def _manifest(writer: _Writer, seed: int, size: str, preset: Preset) -> dict:
    def combined(rels: list[str]) -> str:
        digest = hashlib.sha256()
        for rel in sorted(rels):
            digest.update(f"{rel}\0{writer.hashes[rel]}\n".encode())
        return digest.hexdigest()

    files: dict[str, str] = {}
    counts = dict(writer.counts)
    for folder in ("images", "masks", "videos", "tokenizer"):
        inside = [rel for rel in writer.hashes if rel.startswith(folder + "/")]
        files[folder + "/"] = combined(inside)
        if folder != "tokenizer":
            counts[folder] = len(inside)
    files.update({rel: h for rel, h in writer.hashes.items() if "/" not in rel})
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "size": size,
        "image_size": preset.image_px,
        "counts": counts,
        "files": files,
        "data_hash": combined(list(writer.hashes)),
    }


# ------------------------------------------------------------------ caching
def read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _cached(out: Path, seed: int, size: str) -> dict | None:
    manifest = read_manifest(out)
    if not manifest:
        return None
    same = (manifest.get("generator"), manifest.get("version"), manifest.get("seed"), manifest.get("size"))
    if same != (GENERATOR, VERSION, seed, size):
        return None
    if not all((out / rel).exists() for rel in manifest.get("files", {})):
        return None
    return manifest


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of `out` (the file `.<name>.lock` beside it) inside: the one writer
    of a data set, or of a warm-start file under `data.root`; other processes wait, then reuse it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def generate(out: Path | str, seed: int = 0, size: str = "default") -> dict:
    """Generate ShapesWorld into `out` (or return the cached manifest); returns the manifest."""
    out = Path(out)
    if size not in PRESETS:
        raise ConfigError(f"size: {size!r} is not one of {', '.join(PRESETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: {seed!r} is not an integer >= 0")
    cached = _cached(out, seed, size)
    if cached:
        return cached
    with locked(out):
        cached = _cached(out, seed, size)  # another process may have finished meanwhile
        if cached:
            return cached
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not _is_shapesworld(out):
            raise DataError(
                f"{out} exists and is not a ShapesWorld directory (no {MANIFEST} from {GENERATOR}); "
                "refusing to overwrite it — choose another output directory"
            )
        with data_guard.replacing(out, seed, size):  # never what workbench did not make, nor data a run reads
            return _generate_locked(out, seed, size)


def _generate_locked(out: Path, seed: int, size: str) -> dict:
    """Build into a temp sibling and rename it into place (the caller holds the locks)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        manifest = _build(tmp, seed, size)
        (tmp / MANIFEST).write_bytes(dump_json(manifest))
        old = out.parent / f".{out.name}.tmp-{os.getpid()}-old"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (old / data_guard.WARMSTART).is_dir():  # workbench's warm-start cache: kept, not made again
        (old / data_guard.WARMSTART).rename(out / data_guard.WARMSTART)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _is_shapesworld(root: Path) -> bool:
    manifest = read_manifest(root)
    return bool(manifest) and manifest.get("generator") == GENERATOR
