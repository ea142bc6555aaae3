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

# ---------------------------------------------------------------- metric names
# What `workbench.evaluate` logs, spelled here so that a sweep's `metrics`/`objective` can be
# checked before anything trains (`sweeps.prechecks`); tests/test_reliability_round2_c.py
# checks a real evaluation logs nothing outside `logged_metrics`.
RETRIEVAL_METRICS = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")  # in %
FINETUNE_METRICS = ("acc",)  # in %
REFERENCES = {  # the reference levels each kind of task logs beside its metrics (`evaluate/references.py`)
    "retrieval": ("chance",),
    "finetune": ("chance", "majority", "blind"),
}
ATTENTION_METRICS = ("in_object",)  # `eval/attention/...` with the retrieval task (data with object masks)
GRADCAM_METRICS = (
    "gradcam_in_object",
    "object_area",
    "chance_gradcam_in_object",
    "gradcam_beats_area",
)  # ... and with ITM built


def logged_metrics(tasks: list[str] | tuple[str, ...], *, itc: bool, itm: bool, rerank_k: int) -> set[str]:
    """Every `eval/...` key a run of these tasks may log, given which of ITC and ITM are built and
    whether ITM re-ranks ITC's top `rerank_k` (then `eval/<task>_itc/...` is ITC's ranking alone)."""
    keys: set[str] = set()
    for name in tasks:
        task = TASKS[name]
        own = RETRIEVAL_METRICS if task.kind == "retrieval" else FINETUNE_METRICS
        keys |= {f"eval/{name}/{key}" for key in own}
        keys |= {f"eval/{name}/{level}_{key}" for level in REFERENCES[task.kind] for key in own}
        if task.kind == "retrieval" and itc and itm and rerank_k > 0:
            keys |= {f"eval/{name}_itc/{key}" for key in own}
    if "retrieval" in tasks:
        keys |= {f"eval/attention/{key}" for key in ATTENTION_METRICS + (GRADCAM_METRICS if itm else ())}
    return keys
