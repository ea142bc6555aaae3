"""Readers for ALBEF-style JSON lists (ShapesWorld and real data alike).

Each kind of file has a schema (field -> allowed types). Reading checks the JSON,
every entry against its schema, and every media path: relative paths resolve
against `data.image_root` (or `data.root`) and may not climb out of it; absolute
paths need `data.allow_absolute_paths`; the file must exist. A problem is one
line naming the file, the entry index and the field. With `data.on_bad_sample:
skip` bad entries are dropped and counted instead (`Entries.skipped`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import DataError
from workbench.strict_yaml import brief

MAX_PROBLEMS = 20  # skip reasons kept for reports


def caption_key(text: str) -> str:
    """The form under which two captions count as the same string (case and spacing ignored)."""
    return " ".join(str(text).lower().split())


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "str", "id" (int or str), "text" (str or non-empty list of str), "list", "paths2"
    required: bool = True
    media: bool = False  # a path to an image/video to resolve and check
    choices: tuple[str, ...] = ()


_IMAGE = Field("image", "str", media=True)
SCHEMAS: dict[str, tuple[Field, ...]] = {
    "pretrain": (_IMAGE, Field("caption", "text"), Field("image_id", "id", required=False)),
    "retrieval": (
        _IMAGE,
        Field("caption", "text"),
        Field("image_id", "id", required=False),
        Field("objects", "list", required=False),
    ),
    "video": (Field("video", "str", media=True), Field("caption", "text")),
    "vqa": (
        Field("question_id", "id"),
        _IMAGE,
        Field("question", "str"),
        Field("answer", "text"),
        Field("template", "str", required=False),
    ),
    "nlvr": (
        Field("images", "paths2", media=True),
        Field("sentence", "str"),
        Field("label", "str", choices=("True", "False")),
    ),
    "ve": (_IMAGE, Field("sentence", "str"), Field("label", "str", choices=("entailment", "neutral", "contradiction"))),
}
_EXPECTED = {
    "str": "a string",
    "id": "an integer or a string",
    "text": "a string or a non-empty list of strings",
    "list": "a list",
    "paths2": "a list of 2 strings",
}


@dataclass
class Entries:
    """Validated entries of one kind (media paths made absolute) and how many were skipped."""

    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    sources: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS skip reasons


def data_path(data_cfg, name: str | Path) -> Path:
    """A data file named in the config: relative names live under `data.root`."""
    path = Path(name)
    return path if path.is_absolute() else Path(data_cfg.root) / path


def media_root(data_cfg) -> Path:
    return Path(data_cfg.image_root or data_cfg.root)


def read_json_list(path: Path) -> list:
    """Load a JSON file that must hold a list."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from None
    except RecursionError:  # '[[[[...' thousands deep: Python's parser gives up
        raise DataError(f"{path}: JSON nested too deeply (entries are flat objects)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _type_ok(value: Any, kind: str) -> bool:
    is_str_list = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return {
        "str": isinstance(value, str),
        "id": isinstance(value, (int, str)) and not isinstance(value, bool),
        "text": isinstance(value, str) or (is_str_list and len(value) > 0),
        "list": isinstance(value, list),
        "paths2": is_str_list and len(value) == 2,
    }[kind]


def resolve_media(raw: str, data_cfg, where: str) -> Path:
    """Absolute path of a media reference, refusing escapes and (unless allowed) absolute paths."""
    if not raw:
        raise DataError(f"{where}: empty path")
    path = Path(raw)
    if path.is_absolute():
        if not data_cfg.allow_absolute_paths:
            raise DataError(f"{where}: absolute path {raw!r} refused — set data.allow_absolute_paths=true to allow it")
        resolved = path
    else:
        normal = os.path.normpath(raw)
        if normal == ".." or normal.startswith(".." + os.sep):
            raise DataError(f"{where}: path {raw!r} climbs out of the image root {media_root(data_cfg)}")
        resolved = media_root(data_cfg) / normal
    if not resolved.exists():
        raise DataError(f"{where}: file not found: {resolved}")
    if not (resolved.is_file() or resolved.is_dir()):  # a FIFO or device: opening it would block or never end
        raise DataError(
            f"{where}: {resolved} is not a regular file (a FIFO, socket or device); give an image or video file"
        )
    if not data_cfg.allow_absolute_paths:  # the rule is about where the bytes are, not the spelling
        real, root = os.path.realpath(resolved), os.path.realpath(media_root(data_cfg))
        if os.path.commonpath([real, root]) != root:
            raise DataError(
                f"{where}: {raw!r} is a symbolic link to {real}, outside the image root {root} — "
                "set data.allow_absolute_paths=true to allow it"
            )
    return resolved


def video_length(path: Path) -> int | None:
    """Frames in a video without decoding it (None when the format does not say cheaply)."""
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.is_file())
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"unreadable video {path}: {' '.join(str(err).split())}") from None
        if array.ndim != 4 or array.shape[-1] != 3:
            raise DataError(f"unreadable video {path}: expected an array [T, H, W, 3], got shape {list(array.shape)}")
        return int(array.shape[0])
    return None


def check_entry(entry: Any, kind: str, data_cfg, where: str, min_frames: int = 0) -> dict[str, Any]:
    """A validated copy of `entry` with media paths resolved; DataError names the problem."""
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object with fields, got {type(entry).__name__}")
    out = dict(entry)
    for spec in SCHEMAS[kind]:
        if spec.name not in entry:
            if spec.required:
                raise DataError(f"{where}: missing field '{spec.name}'")
            continue
        value = entry[spec.name]
        at = f"{where}.{spec.name}"
        if not _type_ok(value, spec.kind):
            raise DataError(f"{at}: expected {_EXPECTED[spec.kind]}, got {type(value).__name__} {_short(value)}")
        if spec.choices and value not in spec.choices:
            raise DataError(f"{at}: {brief(value)} is not one of {', '.join(spec.choices)}")
        if spec.kind in ("str", "text", "paths2"):
            _check_text(value, at, empty_ok=spec.kind == "str" and spec.name not in TEXT_FIELDS)
        if spec.media:
            if isinstance(value, list):
                out[spec.name] = [str(resolve_media(v, data_cfg, f"{at}[{i}]")) for i, v in enumerate(value)]
            else:
                out[spec.name] = str(resolve_media(value, data_cfg, at))
    if kind == "video" and min_frames:
        frames = video_length(Path(out["video"]))
        if frames is not None and frames < min_frames:
            raise DataError(
                f"{where}.video: {out['video']} has {frames} frames, fewer than data.num_frames={min_frames} "
                "(lower data.num_frames or set data.on_bad_sample=skip)"
            )
    return out


TEXT_FIELDS = ("caption", "question", "sentence", "answer")  # what the model reads: never empty


def _check_text(value: str | list[str], at: str, empty_ok: bool) -> None:
    """Text is valid Unicode (a lone surrogate like "\\ud800" is not: tokenizers fail on it)
    and, where the model reads it, not empty (an empty caption trains on nothing)."""
    for i, text in enumerate(value if isinstance(value, list) else [value]):
        where = f"{at}[{i}]" if isinstance(value, list) else at
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DataError(
                f"{where}: invalid Unicode: a lone surrogate {text[err.start]!a} at character {err.start} "
                "(the JSON has an unpaired \\uD800-\\uDFFF escape)"
            ) from None
        if not empty_ok and not text.strip():
            raise DataError(f"{where}: empty text ({_short(text)}); give the words or drop the entry")


def _short(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return brief(value)  # never serialise a huge or deeply nested value whole
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_entries(data_cfg, files: list[str] | str, kind: str, min_frames: int = 0) -> Entries:
    """Read and validate every entry of the JSON lists `files` (names under `data.root`)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown entry kind {kind!r}; known: {', '.join(SCHEMAS)}")
    files = [files] if isinstance(files, (str, Path)) else files
    if not files:
        raise DataError(f"no {kind} data files configured (an empty list)")
    skip = data_cfg.on_bad_sample == "skip"
    result = Entries()
    for name in files:
        path = data_path(data_cfg, name)
        result.sources.append(path)
        for index, entry in enumerate(read_json_list(path)):
            try:
                result.items.append(check_entry(entry, kind, data_cfg, f"{path}[{index}]", min_frames))
            except DataError as err:
                if not skip:
                    raise
                result.skipped += 1
                if len(result.problems) < MAX_PROBLEMS:
                    result.problems.append(str(err))
    if not result.items:
        raise DataError(
            f"no usable entries in {', '.join(str(p) for p in result.sources)}"
            + (f" ({result.skipped} bad entries skipped; the first: {result.problems[0]})" if result.skipped else "")
        )
    return result


def read_answer_list(data_cfg, name: str = "vqa_answers.json") -> list[str]:
    """The VQA answer vocabulary: a JSON list of strings."""
    path = data_path(data_cfg, name)
    answers = read_json_list(path)
    for index, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise DataError(f"{path}[{index}]: expected a string answer, got {type(answer).__name__} {_short(answer)}")
    return answers
