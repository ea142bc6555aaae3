"""Reference levels of every task, computed from the data alone: what a score must beat.

For a headline metric `eval/<task>/<metric>` the references are logged as
`eval/<task>/chance_<metric>`, `eval/<task>/majority_<metric>` and
`eval/<task>/blind_<metric>` (reports build their reference row from these names):

* chance: the expected score of a uniformly random guess (VQA: a random answer of
  the answer list; retrieval: a random ranking, exact for the split's caption maps);
* majority: always answering the most frequent train-split answer/label;
* blind: a text-only model — logistic regression on the unigrams and bigrams of the
  question/statement, trained on the train split — so a score above it needed the image.

Retrieval has only chance levels (a text-only model cannot rank images). All in %.
Results are cached per data file contents, so a sweep computes each once per process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from itertools import pairwise
from math import comb
from pathlib import Path

import numpy as np
import torch

from workbench.evaluate.retrieval_metrics import METRIC_KEYS, RECALL_AT, correct_pairs
from workbench.tasks import TASKS

LABEL_TASKS = {"nlvr": "sentence", "ve": "sentence"}
BLIND_STEPS = 150
BLIND_LR = 0.1


# ------------------------------------------------------------------ retrieval
def chance_recall(n_items: int, n_correct: int, k: int) -> float:
    """P(at least one of `n_correct` of `n_items` lands in the top k of a random ranking)."""
    if n_correct <= 0:
        return 0.0
    k = min(k, n_items)
    return 1.0 - comb(n_items - n_correct, k) / comb(n_items, k)


def retrieval_chance(txt2img: Sequence[int], n_images: int, texts: Sequence[str] | None = None) -> dict[str, float]:
    """{chance_tr_r1, ..., chance_r_mean}: expected recall (%) of a random ranking of this split."""
    correct = correct_pairs(txt2img, n_images, texts)
    per_image, per_text = correct.sum(axis=1), correct.sum(axis=0)
    out = {}
    for k in RECALL_AT:
        out[f"tr_r{k}"] = 100.0 * float(np.mean([chance_recall(len(txt2img), int(c), k) for c in per_image]))
        out[f"ir_r{k}"] = 100.0 * float(np.mean([chance_recall(n_images, int(c), k) for c in per_text]))
    out["r_mean"] = float(np.mean([out[key] for key in METRIC_KEYS[:-1]]))
    return {f"chance_{key}": value for key, value in out.items()}


# ------------------------------------------------------------- classification
def ngrams(text: str) -> list[str]:
    words = re.findall(r"\w+", text.lower())
    return words + [" ".join(pair) for pair in pairwise(words)]


def bag_of_ngrams(texts: Sequence[str], vocab: dict[str, int]) -> torch.Tensor:
    features = torch.zeros(len(texts), len(vocab))
    for row, text in enumerate(texts):
        for gram in ngrams(text):
            if gram in vocab:
                features[row, vocab[gram]] += 1
    return features


def blind_predictions(
    train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str], classes: int, seed: int = 0
) -> np.ndarray:
    """Labels a text-only logistic regression (unigrams + bigrams, full-batch Adam) predicts for `test_texts`."""
    vocab: dict[str, int] = {}
    for text in train_texts:
        for gram in ngrams(text):
            vocab.setdefault(gram, len(vocab))
    x_train, x_test = bag_of_ngrams(train_texts, vocab), bag_of_ngrams(test_texts, vocab)
    y_train = torch.as_tensor(list(train_labels), dtype=torch.long)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            model = torch.nn.Linear(len(vocab), classes)
            optimizer = torch.optim.Adam(model.parameters(), lr=BLIND_LR)
            for _ in range(BLIND_STEPS):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x_train), y_train).backward()
                optimizer.step()
            with torch.no_grad():
                return model(x_test).argmax(dim=1).numpy()
    finally:
        torch.set_num_threads(threads)


def label_references(
    train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str], test_correct: np.ndarray
) -> dict[str, float]:
    """{chance_acc, majority_acc, blind_acc} in %; `test_correct` bool [N, classes] = right answers
    of each test item."""
    classes = test_correct.shape[1]
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=classes)
    majority = int(counts.argmax())
    blind = blind_predictions(train_texts, train_labels, test_texts, classes)
    rows = np.arange(len(test_texts))
    return {
        "chance_acc": 100.0 * float(test_correct.mean()),
        "majority_acc": 100.0 * float(test_correct[:, majority].mean()),
        "blind_acc": 100.0 * float(test_correct[rows, blind].mean()),
    }


def _vqa_items(entries: list[dict], answers: list[str]) -> tuple[list[str], list[int], np.ndarray]:
    """(questions, most frequent listed answer index or -1, bool [N, A] of listed answers)."""
    index = {a: i for i, a in enumerate(answers)}
    texts, labels = [], []
    correct = np.zeros((len(entries), len(answers)), dtype=bool)
    for row, entry in enumerate(entries):
        given = entry["answer"] if isinstance(entry["answer"], list) else [entry["answer"]]
        known = [index[a] for a in given if a in index]
        correct[row, known] = True
        texts.append(entry["question"])
        labels.append(max(set(known), key=known.count) if known else -1)
    return texts, labels, correct


def _label_items(entries: list[dict], text_key: str, names: Sequence[str]) -> tuple[list[str], list[int], np.ndarray]:
    labels = [names.index(entry["label"]) for entry in entries]
    correct = np.zeros((len(entries), len(names)), dtype=bool)
    correct[np.arange(len(entries)), labels] = True
    return [entry[text_key] for entry in entries], labels, correct


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=32)
def _classification_references(task: str, train_key: tuple, eval_key: tuple, answers_key: tuple | None) -> dict:
    import json

    from workbench.data.datasets import NLVR_LABELS, VE_LABELS

    train, held_out = (json.loads(Path(key[0]).read_text()) for key in (train_key, eval_key))
    if task == "vqa":
        answers = json.loads(Path(answers_key[0]).read_text())
        train_texts, train_labels, _ = _vqa_items(train, answers)
        kept = [i for i, label in enumerate(train_labels) if label >= 0]
        train_texts, train_labels = [train_texts[i] for i in kept], [train_labels[i] for i in kept]
        test_texts, _, correct = _vqa_items(held_out, answers)
    else:
        names = NLVR_LABELS if task == "nlvr" else VE_LABELS
        train_texts, train_labels, _ = _label_items(train, LABEL_TASKS[task], names)
        test_texts, _, correct = _label_items(held_out, LABEL_TASKS[task], names)
    return label_references(train_texts, train_labels, test_texts, correct)


def task_references(task: str, cfg, dataset=None) -> dict[str, float]:
    """`eval/<task>/{chance,majority,blind}_<metric>` of one task on `eval.split` (retrieval: chance only)."""
    from workbench.data.readers import data_path

    prefix = f"eval/{task}"
    if TASKS[task].kind == "retrieval":
        if dataset is None:
            return {}
        chance = retrieval_chance(dataset.txt2img, len(dataset.images), dataset.texts)
        return {f"{prefix}/{key}": value for key, value in chance.items()}
    train = _file_key(data_path(cfg.data, f"{task}_train.json"))
    held_out = _file_key(data_path(cfg.data, f"{task}_{cfg.eval.split}.json"))
    answers = _file_key(data_path(cfg.data, "vqa_answers.json")) if task == "vqa" else None
    return {
        f"{prefix}/{key}": value for key, value in _classification_references(task, train, held_out, answers).items()
    }
