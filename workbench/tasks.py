"""The downstream evaluation tasks, spelled once: name, kind, the files each reads, its table label.

`config` (the `eval.tasks` default and its check), `evaluate` (which tasks are
fine-tunes, which get reference levels), `data` (which files a task reads, with
which schema) and `reports` (table labels) all read this table, so adding a task
is one row here plus its evaluator in `evaluate.runner.TASKS`. Imports nothing
from the package: it sits at the bottom layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EvalTask:
    name: str  # the `eval.tasks` entry and the metric group `eval/<name>/...`
    kind: Literal["retrieval", "finetune"]  # ranked by ITC (+ITM), or a short fine-tune of a model copy
    entries: str  # schema of its `<name>_<split>.json` lists (`data.readers.SCHEMAS`)
    splits: tuple[str, ...]  # the splits its files may have
    label: str  # how report tables name its metrics ("" = the headline task, no prefix)


TASKS: dict[str, EvalTask] = {
    task.name: task
    for task in (
        EvalTask("retrieval", "retrieval", entries="retrieval", splits=("val", "test"), label=""),
        EvalTask("video_retrieval", "retrieval", entries="video", splits=("train", "val", "test"), label="video"),
        EvalTask("vqa", "finetune", entries="vqa", splits=("train", "val", "test"), label="VQA"),
        EvalTask("nlvr", "finetune", entries="nlvr", splits=("train", "val", "test"), label="NLVR2"),
        EvalTask("ve", "finetune", entries="ve", splits=("train", "val", "test"), label="VE"),
    )
}
EVAL_TASKS = tuple(TASKS)  # every task, in the order a run evaluates them (the `eval.tasks` default)
FINETUNES = tuple(name for name, task in TASKS.items() if task.kind == "finetune")
RETRIEVALS = tuple(name for name, task in TASKS.items() if task.kind == "retrieval")
