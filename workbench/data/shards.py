"""Web-scale pre-training pairs in tar shards (the webdataset layout: open_clip, img2dataset).

A shard is a plain tar; the members of one sample share a key (the name up to the
first dot of its base name): `key.jpg` (or .jpeg/.png/.webp) and `key.txt` (the
caption) or `key.json` (`{"caption": str | [str, ...]}`, or `"text"`). Shards are
named with brace notation, `/data/cc3m/{000000..000331}.tar`, in
`data.pretrain_shards` (relative patterns live under `data.root`).

Read with the standard library's `tarfile`, not the `webdataset` package, because
of the determinism contract of `stream.PretrainStream`: the batch of any step is a
pure function of (seed, step), so `--resume` lands on the same sample without
replaying the stream. webdataset is a sequential pipeline (shard lists split by
worker, shuffle buffers filled as it reads): its order depends on worker count and
on how far it has read. Here every shard is indexed once (member names, offsets
and sizes; headers only, no image is decoded), so sample i -> (shard, member) is a
pure function and any sample is one seek + read away.

Order (`ShardOrder`): every epoch permutes the shards and, inside each shard, its
samples (seeded by (seed, epoch, shard)). Under DDP each rank is a lane with its
own shards (shard j of an epoch's permutation goes to rank j mod world size), so
ranks read disjoint shards; a rank takes its local batch from its own sequence. The
order therefore depends on the number of ranks (as in any sharded loader): resume
with the same `--nproc`. DataLoader workers load whole batches of their rank (batch
k goes to worker k mod workers), so batches do not depend on the worker count;
workers of one rank share that rank's shards by seek + read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workbench.data.datasets import CaptionDataset, MediaDataset, sample_rng
from workbench.data.readers import Entries, caption_key
from workbench.data.text_augment import mask_words
from workbench.errors import ConfigError, DataError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTS = ("txt", "json")
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """'a/{000..002}.tar' -> a/000.tar, a/001.tar, a/002.tar ('{x,y}' lists too; zero padding kept)."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    ranged = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if ranged:
        first, last = ranged.groups()
        if int(last) < int(first):
            raise ConfigError(f"data.pretrain_shards: range {{{body}}} runs backwards ({first} > {last})")
        width = len(first) if first.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise ConfigError(f"data.pretrain_shards: {{{body}}} is neither a range {{000..009}} nor a list {{a,b}}")
    return [path for choice in choices for path in expand_braces(head + choice + tail)]


def shard_paths(data_cfg) -> list[Path]:
    """The shard files `data.pretrain_shards` names (relative patterns under `data.root`); each must exist."""
    pattern = data_cfg.pretrain_shards
    paths = [Path(p) if Path(p).is_absolute() else Path(data_cfg.root) / p for p in expand_braces(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"data.pretrain_shards: {len(missing)} of {len(paths)} shards not found, the first: {missing[0]}"
        )
    return paths


@dataclass
class _Member:
    offset: int
    size: int
    ext: str


EXTS = IMAGE_EXTS + CAPTION_EXTS  # member kinds, stored as their position here


@dataclass
class ShardIndex:
    """Every sample of the shards: where its image and caption bytes are. Built once, by
    `index_shards`; numpy arrays (not Python objects per sample), so millions of samples
    take tens of MB and forked DataLoader workers share the pages."""

    paths: list[Path]
    counts: np.ndarray  # samples per shard
    starts: np.ndarray  # global index of each shard's first sample
    image: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 3), dtype=np.int64)
    )  # (offset, size, ext) per sample
    caption: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="S1"))
    problems: list[str] = field(default_factory=list)  # samples left out: no image, no caption

    def __len__(self) -> int:
        return len(self.image)

    def shard_of(self, index: int) -> int:
        return int(np.searchsorted(self.starts, index, side="right") - 1)

    def _where(self, index: int, member: np.ndarray) -> str:
        return f"{self.paths[self.shard_of(index)]}:{self.keys[index].decode()}.{EXTS[member[2]]}"

    def _read(self, index: int, member: np.ndarray) -> bytes:
        with open(self.paths[self.shard_of(index)], "rb") as file:
            file.seek(int(member[0]))
            return file.read(int(member[1]))

    def image_file(self, index: int) -> io.BytesIO:
        data = io.BytesIO(self._read(index, self.image[index]))
        data.name = self._where(index, self.image[index])
        return data

    def captions(self, index: int) -> list[str]:
        """The sample's caption(s); DataError naming the shard and key when unusable."""
        member = self.caption[index]
        raw, where = self._read(index, member), self._where(index, member)
        try:
            text = raw.decode("utf-8")
            value: Any = json.loads(text) if EXTS[member[2]] == "json" else text.strip()
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{where}: unreadable caption ({err})") from None
        if isinstance(value, dict):
            value = value.get("caption", value.get("text"))
        captions = [value] if isinstance(value, str) else value
        if (
            not isinstance(captions, list)
            or not captions
            or not all(isinstance(c, str) and c.strip() for c in captions)
        ):
            raise DataError(f"{where}: no caption (expected text, or JSON with a non-empty 'caption' or 'text')")
        return captions


def _key_and_ext(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def index_shards(paths: list[Path]) -> ShardIndex:
    """Read every shard's tar headers once (no payload): the samples in shard then member order.
    A key without an image or without a caption is left out and listed in `problems`."""
    counts, starts = np.zeros(len(paths), dtype=np.int64), np.zeros(len(paths), dtype=np.int64)
    images: list[tuple[int, int, int]] = []
    captions: list[tuple[int, int, int]] = []
    keys: list[bytes] = []
    problems: list[str] = []
    for number, path in enumerate(paths):
        starts[number] = len(images)
        samples: dict[str, dict[str, _Member]] = {}
        try:
            with tarfile.open(path, "r:") as tar:  # uncompressed: payload offsets are file offsets
                for member in tar:
                    if member.isfile():
                        key, ext = _key_and_ext(member.name)
                        samples.setdefault(key, {})[ext] = _Member(member.offset_data, member.size, ext)
        except (tarfile.TarError, OSError) as err:
            raise DataError(f"unreadable shard {path}: {' '.join(str(err).split())}") from None
        for key, members in samples.items():
            image = next((members[e] for e in IMAGE_EXTS if e in members), None)
            caption = next((members[e] for e in CAPTION_EXTS if e in members), None)
            if image is None or caption is None:
                missing = "image (.jpg/.png/.webp)" if image is None else "caption (.txt/.json)"
                problems.append(f"{path}:{key}: no {missing}; left out")
                continue
            images.append((image.offset, image.size, EXTS.index(image.ext)))
            captions.append((caption.offset, caption.size, EXTS.index(caption.ext)))
            keys.append(key.encode())
        counts[number] = len(images) - starts[number]
    if not images:
        raise DataError(f"no usable samples in {len(paths)} shards ({paths[0]} ...)")
    return ShardIndex(
        paths,
        counts,
        starts,
        np.array(images, dtype=np.int64),
        np.array(captions, dtype=np.int64),
        np.array(keys),
        problems,
    )


def caption_hash(key: str) -> int:
    """A caption string's id for ITC's same-caption positives (same text -> same id), < 2**56."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=7).digest(), "big")


class ShardOrder:
    """Lane `lane` of `lanes` (a DDP rank): its endless sample sequence, position -> global sample index."""

    def __init__(self, index: ShardIndex, seed: int, lane: int = 0, lanes: int = 1):
        shards = len(index.paths)
        if lanes > shards:
            raise ConfigError(
                f"data.pretrain_shards: {shards} shards for {lanes} ranks; each rank reads its own shards "
                "(write more, smaller shards: workbench data shard --per-shard N)"
            )
        self.index, self.seed, self.lane, self.lanes = index, seed, lane, lanes
        self._lengths: list[int] = []  # samples of this lane in epochs 0, 1, ...
        self._cache: dict[int, np.ndarray] = {}

    def _shards(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 2, epoch]).permutation(len(self.index.paths))[self.lane :: self.lanes]

    def epoch(self, epoch: int) -> np.ndarray:
        """Global sample indices of this lane's epoch `epoch`, in reading order."""
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.clear()
            parts = [
                self.index.starts[s]
                + np.random.default_rng([self.seed, 3, epoch, int(s)]).permutation(self.index.counts[s])
                for s in self._shards(epoch)
            ]
            self._cache[epoch] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._cache[epoch]

    def __getitem__(self, position: int) -> int:
        epoch = 0
        while True:
            if epoch == len(self._lengths):
                self._lengths.append(int(self.index.counts[self._shards(epoch)].sum()))
            if self._lengths[epoch] and position < self._lengths[epoch]:
                return int(self.epoch(epoch)[position])
            position -= self._lengths[epoch]
            epoch += 1


# ------------------------------------------------------------------ writing and checking
def write_shards(entries: list[dict[str, Any]], out_dir: Path, per_shard: int) -> list[Path]:
    """ALBEF entries (absolute `image` paths, `caption` str or list) -> out_dir/000000.tar, ...
    Bytes are reproducible (fixed mtime/owner); each shard is written whole, then renamed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = (len(entries) + per_shard - 1) // per_shard
    width = max(6, len(str(count - 1)))
    written = []
    for number in range(count):
        path = out_dir / f"{number:0{width}d}.tar"
        partial = path.with_suffix(".tar.partial")
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, entry in enumerate(entries[number * per_shard : (number + 1) * per_shard], start=number * per_shard):
                key = f"{i:09d}"
                image = Path(entry["image"])
                ext = image.suffix.lower().lstrip(".").replace("jpeg", "jpg")
                _add(tar, f"{key}.{ext}", image.read_bytes())
                caption = entry["caption"]
                if isinstance(caption, str):
                    _add(tar, f"{key}.txt", caption.encode())
                else:
                    _add(tar, f"{key}.json", json.dumps({"caption": caption}).encode())
        partial.replace(path)
        written.append(path)
    return written


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def brace_pattern(paths: list[Path]) -> str:
    """The `data.pretrain_shards` value naming `paths` (as `write_shards` numbers them)."""
    first, last = paths[0], paths[-1]
    return str(first.parent / f"{{{first.stem}..{last.stem}}}.tar") if len(paths) > 1 else str(first)


def check_shards(data_cfg, decode: bool = True) -> dict[str, Any]:
    """`data check`'s report of the shards: samples, keys left out, unreadable images/captions."""
    report: dict[str, Any] = {"kind": "shards", "entries": 0, "bad_entries": 0, "unreadable": 0, "problems": []}
    try:
        index = index_shards(shard_paths(data_cfg))
    except (DataError, ConfigError) as err:
        report.update(bad_entries=None, problems=[str(err)])
        return report
    bad: list[str] = list(index.problems)
    unreadable = 0
    words = []
    for i in range(len(index)):
        try:
            words += [len(c.split()) for c in index.captions(i)]
        except DataError as err:
            bad.append(str(err))
        if decode:
            image = index.image_file(i)
            try:
                with Image.open(image) as opened:
                    opened.convert("RGB")
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                unreadable += 1
                bad.append(f"unreadable image {image.name}: {' '.join(str(err).split())}")
    report.update(
        entries=len(index),
        shards=len(index.paths),
        bad_entries=len(bad) - unreadable,
        unreadable=unreadable,
        problems=bad[:20],
    )
    if words:
        report["text_words"] = {"min": min(words), "mean": round(float(np.mean(words)), 2), "max": max(words)}
    return report


class ShardCaptionDataset(CaptionDataset):
    """Pre-training pairs from shards: `CaptionDataset`'s sample (caption drawn, flip, word
    masking, same transform) with the image and caption read from the tar. `image_id` is
    the global sample index; `caption_id` a hash of the caption string (no global table)."""

    def __init__(self, cfg, index: ShardIndex, mask_token: str, train: bool = True):
        MediaDataset.__init__(self, cfg, Entries(skipped=len(index.problems)), augment=train, random_frames=train)
        self.index, self.media_key, self.mask_token, self.train = index, "image", mask_token, train

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, index: int, seed: int | None) -> dict[str, Any]:
        rng = sample_rng(seed)
        captions = self.index.captions(index)
        text = captions[int(rng.integers(len(captions)))]
        image, text = self.augmented(self.index.image_file(index), None, text, rng, seed)
        caption_id = caption_hash(caption_key(text))
        augment = self.cfg.augment
        if self.train and augment.text and augment.text_mask_ratio > 0:
            text = mask_words(text, augment.text_mask_ratio, self.mask_token, rng)
        return {"image": image, "text": text, "image_id": index, "caption_id": caption_id}


def shard_dataset(
    src_root: Path, out_dir: Path, per_shard: int, files: list[str], image_root: str = ""
) -> tuple[list[Path], str]:
    """`workbench data shard`: the ALBEF JSON files `files` under `src_root` (images under
    `image_root` or `src_root`) -> shards in `out_dir`; (shard paths, their brace pattern)."""
    from types import SimpleNamespace

    from workbench.data.readers import read_entries

    if per_shard < 1:
        raise ConfigError(f"--per-shard: {per_shard} is not allowed; give a number of samples >= 1 (e.g. 10000)")
    source = SimpleNamespace(
        root=str(src_root), image_root=image_root, allow_absolute_paths=False, on_bad_sample="error"
    )
    entries = read_entries(source, files, "pretrain").items
    paths = write_shards(entries, out_dir, per_shard)
    return paths, brace_pattern(paths)
