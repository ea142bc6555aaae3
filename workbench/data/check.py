"""`check_dataset`: everything wrong with a data set, found before a long run starts.

Reads every configured file in skip mode (so all problems are counted, not just
the first), decodes every image/video once, flags VQA training questions with no
answer in `vqa_answers.json`, and summarises caption lengths in words and tokens
(how many exceed `data.max_text_len` and will be truncated) and, for retrieval
files, the share of captions that also caption another image (duplicates). `check_eval_files`
is the cheap part `workbench run` does before training (read, do not decode).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.media import check_video, load_image
from workbench.data.readers import caption_key, data_path, read_answer_list, read_entries, read_json_list
from workbench.errors import DataError
from workbench.progress import phase
from workbench.tasks import TASKS

_TEXT_KEYS = ("caption", "question", "sentence")


def _expected_files(cfg, pretrain: bool = True) -> list[tuple[str, str]]:
    """(file name, kind) of every file a run with this config reads (`pretrain=False`: the eval files)."""
    files = (
        [(name, "pretrain") for name in cfg.data.pretrain_files] if pretrain and not cfg.data.pretrain_shards else []
    )
    files += [(name, "video") for name in cfg.data.video_pretrain_files] if pretrain else []
    for name in cfg.eval.tasks:
        task = TASKS[name]
        splits = [cfg.eval.split] + (
            ["train"] if task.kind == "finetune" else []
        )  # a fine-tune trains on its train split
        files += [(f"{name}_{split}.json", task.entries) for split in splits]
    return files


def check_eval_files(cfg) -> None:
    """Read (not decode) every downstream file the run will evaluate on, before it trains:
    a missing or malformed eval file is a DataError now, not after hours of pre-training."""
    for name, kind in _expected_files(cfg, pretrain=False):
        read_entries(cfg.data, [name], kind, min_frames=cfg.data.num_frames if kind == "video" else 0)
    if "vqa" in cfg.eval.tasks:
        read_answer_list(cfg.data)


def unanswerable(data_cfg, name: str) -> list[str]:
    """VQA training questions none of whose answers is in vqa_answers.json: their soft-score
    target is all zeros, so they teach nothing (usually a wrong or stale answer list)."""
    try:
        answers = set(read_answer_list(data_cfg))
    except DataError as err:
        return [str(err)]
    path = data_path(data_cfg, name)
    problems = []
    for index, entry in enumerate(read_json_list(path)):
        given = entry.get("answer") if isinstance(entry, dict) else None
        given = [given] if isinstance(given, str) else given
        if isinstance(given, list) and given and not answers.intersection(given):
            problems.append(
                f"{path}[{index}].answer: {given!r} — none is in vqa_answers.json ({len(answers)} answers); "
                "add it there or drop the question"
            )
    return problems


def _texts(entry: dict) -> list[str]:
    out = []
    for key in _TEXT_KEYS:
        value = entry.get(key)
        if value is not None:
            out += value if isinstance(value, list) else [value]
    return out


def _unreadable(entry: dict) -> list[str]:
    problems = []
    for key in ("image", "images", "video"):
        paths = entry.get(key, [])
        for path in paths if isinstance(paths, list) else [paths]:
            try:
                if key == "video":
                    check_video(path)  # the container and the first frame decode
                else:
                    load_image(path)
            except DataError as err:
                problems.append(str(err))
    return problems


PROGRESS_FROM = 2000  # entries: a file this long shows a bar while its media are decoded


def _decode_all(items: list[dict], name: str) -> list[str]:
    """Every entry's media decoded once; a long file shows how far it got (10^6 entries take minutes)."""
    if len(items) < PROGRESS_FROM:
        return [p for entry in items for p in _unreadable(entry)]
    problems: list[str] = []
    with phase(f"data check: decoding the media of {name}", total=len(items), unit="entries") as bar:
        for entry in items:
            problems += _unreadable(entry)
            bar.advance()
    return problems


def duplicate_caption_rate(entries: list[dict], media_key: str) -> float:
    """% of captions whose exact string (case and spaces normalised) also captions another
    image/video of the file. Such captions tie in retrieval: the metric counts every image
    that carries the string as correct, but a high rate means the split cannot tell images apart."""
    owners: dict[str, set] = {}
    captions: list[str] = []
    for index, entry in enumerate(entries):
        texts = entry.get("caption", [])
        for text in texts if isinstance(texts, list) else [texts]:
            key = caption_key(text)
            owners.setdefault(key, set()).add(entry.get(media_key, index))
            captions.append(key)
    if not captions:
        return 0.0
    return 100.0 * sum(len(owners[key]) > 1 for key in captions) / len(captions)


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {"min": int(array.min()), "mean": round(float(array.mean()), 2), "max": int(array.max())}


def check_dataset(cfg, tokenizer=None, decode_media: bool = True) -> dict[str, Any]:
    """Summary: per file entries, bad entries (with the first reasons), unreadable media,
    caption lengths, the duplicate-caption rate of retrieval files; plus missing files and `ok`
    (nothing wrong at all)."""
    data = dataclasses.replace(cfg.data, on_bad_sample="skip")
    summary: dict[str, Any] = {"root": str(Path(data.root)), "files": {}, "missing_files": []}
    for name, kind in _expected_files(cfg):
        if not data_path(data, name).is_file():
            summary["missing_files"].append(str(data_path(data, name)))
            continue
        report: dict[str, Any] = {"kind": kind}
        try:
            entries = read_entries(data, [name], kind, min_frames=data.num_frames if kind == "video" else 0)
        except DataError as err:
            report.update(entries=0, bad_entries=None, problems=[str(err)], unreadable=0)
            summary["files"][name] = report
            continue
        unreadable = _decode_all(entries.items, name) if decode_media else []
        texts = [t for entry in entries.items for t in _texts(entry)]
        no_answer = unanswerable(data, name) if kind == "vqa" and name.endswith("_train.json") else []
        report.update(
            entries=len(entries.items),
            bad_entries=entries.skipped + len(no_answer),
            problems=entries.problems + no_answer[:10] + unreadable[:10],
            unreadable=len(unreadable),
            text_words=_stats([len(t.split()) for t in texts]),
        )
        if kind in ("retrieval", "video"):
            media_key = "video" if kind == "video" else "image"
            report["duplicate_captions"] = round(duplicate_caption_rate(entries.items, media_key), 2)
        if tokenizer is not None and texts:
            lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
            report["text_tokens"] = _stats(lengths)
            report["truncated"] = sum(n > data.max_text_len for n in lengths)
        summary["files"][name] = report
    if cfg.data.pretrain_shards:
        from workbench.data.shards import check_shards

        summary["files"][cfg.data.pretrain_shards] = check_shards(data, decode_media)
    summary["ok"] = not summary["missing_files"] and all(
        r["bad_entries"] == 0 and r["unreadable"] == 0 for r in summary["files"].values()
    )
    return summary
