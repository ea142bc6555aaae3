"""`evaluate_all`: every task of `eval.tasks` plus the attention score -> one metrics dict.

Metric names are stable (INTERFACES.md "MLflow layout"); all values are in %
except the attention share (a fraction in [0, 1]):

* `eval/retrieval/{tr_r1,tr_r5,tr_r10,ir_r1,ir_r5,ir_r10,r_mean}` — ITC top-k re-ranked by ITM
* `eval/retrieval_itc/{...same keys}` — ITC similarity only (only when ITC is built)
* `eval/video_retrieval/{...}` and `eval/video_retrieval_itc/{...}` — the same on videos
* `eval/vqa/acc`, `eval/nlvr/acc`, `eval/ve/acc` — short fine-tunes of a model copy
* `eval/<task>/{chance,majority,blind}_<metric>` — the task's reference levels from the
  data alone (`references.py`; retrieval: `chance_*` only)
* `eval/attention/in_object` — share of last-layer text-CLS->patch attention inside the
  named object, on the retrieval split (so computed with the `retrieval` task;
  absent for data without object masks).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
from torch import nn

from workbench.config import RunConfig
from workbench.evaluate.attention import attention_in_object
from workbench.evaluate.finetune import finetune
from workbench.evaluate.nlvr import NLVR
from workbench.evaluate.references import task_references
from workbench.evaluate.retrieval import evaluate_retrieval
from workbench.evaluate.ve import VE
from workbench.evaluate.vqa import VQA

Task = Callable[[nn.Module, nn.Module, RunConfig, object, torch.device], dict[str, float]]

TASKS: dict[str, Task] = {
    "retrieval": partial(evaluate_retrieval, task="retrieval"),
    "video_retrieval": partial(evaluate_retrieval, task="video_retrieval"),
    "vqa": lambda model, objectives, cfg, tokenizer, device: finetune(VQA, model, cfg, tokenizer, device),
    "nlvr": lambda model, objectives, cfg, tokenizer, device: finetune(NLVR, model, cfg, tokenizer, device),
    "ve": lambda model, objectives, cfg, tokenizer, device: finetune(VE, model, cfg, tokenizer, device),
}


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode inside, each module's (and submodule's) own mode restored after."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def evaluate_all(
    model: nn.Module,
    objectives: nn.Module,
    cfg: RunConfig,
    tokenizer,
    device: torch.device,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run `cfg.eval.tasks` (with `retrieval`, also the attention score) and return {metric name: value}.

    `progress(task_name)` is called before each task. Fine-tunes work on copies;
    `model` and `objectives` come back with their parameters and modes unchanged.
    """
    metrics: dict[str, float] = {}
    if not cfg.eval.tasks:
        return metrics
    with eval_mode(model, objectives):
        for name in cfg.eval.tasks:
            if progress is not None:
                progress(name)
            metrics.update(TASKS[name](model, objectives, cfg, tokenizer, device))
            if name in ("vqa", "nlvr", "ve"):
                metrics.update(task_references(name, cfg))
        if "retrieval" in cfg.eval.tasks:
            if progress is not None:
                progress("attention")
            metrics.update(attention_in_object(model, cfg, tokenizer, device))
    return metrics
