"""`evaluate_all`: every task of `eval.tasks` plus the attention score -> one metrics dict.

Metric names are stable (INTERFACES.md "MLflow layout"); all values are in %
except the attention share (a fraction in [0, 1]):

* `eval/retrieval/{tr_r1,tr_r5,tr_r10,ir_r1,ir_r5,ir_r10,r_mean}` — ITC top-k re-ranked by ITM
* `eval/retrieval_itc/{...same keys}` — ITC similarity only (only when ITC is built and
  ITM re-ranking is on; otherwise it would repeat `eval/retrieval/*`)
* `eval/video_retrieval/{...}` and `eval/video_retrieval_itc/{...}` — the same on videos
* `eval/vqa/acc`, `eval/nlvr/acc`, `eval/ve/acc` — short fine-tunes of a model copy
* `eval/<task>/{chance,majority,blind}_<metric>` — the task's reference levels from the
  data alone (`references.py`; retrieval: `chance_*` only)
* `eval/attention/in_object` — share of last-layer text-CLS->patch attention inside the
  named object, on the retrieval split (so computed with the `retrieval` task;
  absent for data without object masks).
* `eval/attention/gradcam_in_object`, `eval/attention/object_area`,
  `eval/attention/gradcam_beats_area` — the same share for the ITM Grad-CAM of the object's
  own words (SoftMask's map), against the area fraction a uniform map scores (with ITM).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from workbench.config import RunConfig
from workbench.evaluate.attention import attention_in_object, gradcam_in_object
from workbench.evaluate.finetune import finetune
from workbench.evaluate.nlvr import NLVR
from workbench.evaluate.references import task_references
from workbench.evaluate.retrieval import built_objective, evaluate_retrieval
from workbench.evaluate.retrieval_attention import attention_in_object_encoded
from workbench.evaluate.ve import VE
from workbench.evaluate.vqa import VQA
from workbench.progress import Phase, phase
from workbench.tasks import FINETUNES

Task = Callable[[nn.Module, nn.Module, RunConfig, object, torch.device], dict[str, float]]

TASKS: dict[str, Task] = {
    "retrieval": partial(evaluate_retrieval, task="retrieval"),  # also takes keep= (see evaluate_all)
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

    `progress(task_name)` is called before each task; each task is also a phase of
    `workbench.progress` (a bar, then a line with its time). Fine-tunes work on copies;
    `model` and `objectives` come back with their parameters and modes unchanged.
    """
    metrics: dict[str, float] = {}
    if not cfg.eval.tasks:
        return metrics
    retrieval_split: dict = {}  # the retrieval task's data set and encodings, reused by the attention score
    with eval_mode(model, objectives):
        for name in cfg.eval.tasks:
            if progress is not None:
                progress(name)
            with phase(f"eval {name}", unit=UNITS.get(name, "batches")) as task_phase:
                if name in FINETUNES:
                    with finetune_progress(task_phase, type(model), cfg.eval.finetune_steps):
                        metrics.update(TASKS[name](model, objectives, cfg, tokenizer, device))
                elif name == "retrieval":
                    metrics.update(TASKS[name](model, objectives, cfg, tokenizer, device, keep=retrieval_split))
                else:
                    metrics.update(TASKS[name](model, objectives, cfg, tokenizer, device))
            if name in FINETUNES:
                metrics.update(task_references(name, cfg))
        if "retrieval" in cfg.eval.tasks:
            if progress is not None:
                progress("attention")
            with phase("eval attention"):
                if "encoded" in retrieval_split:
                    metrics.update(
                        attention_in_object_encoded(
                            model, retrieval_split["dataset"], retrieval_split["encoded"], cfg, device
                        )
                    )
                else:
                    metrics.update(attention_in_object(model, cfg, tokenizer, device))
            itm = built_objective(objectives, "itm")
            if itm is not None:
                with phase("eval grad-cam"):
                    metrics.update(gradcam_in_object(model, itm, cfg, tokenizer, device))
    return metrics


UNITS = {name: "steps" for name in FINETUNES}


@contextmanager
def finetune_progress(task_phase: Phase, model_class: type, steps: int) -> Iterator[None]:
    """Count a fine-tune's optimiser steps, then its scoring batches, on `task_phase`.

    The fine-tune code stays free of progress calls: a global optimiser step hook
    counts steps, and a global forward hook counts the no-grad forward passes of the
    model's class (the scoring batches). Both hooks are removed on exit.
    """
    task_phase.set_total(max(1, steps))
    task_phase.describe("fine-tune")
    scoring = {"started": False}

    def on_step(optimizer, args, kwargs) -> None:
        task_phase.advance()

    def on_forward(module, args, output) -> None:
        if type(module) is model_class and not torch.is_grad_enabled():
            if not scoring["started"]:
                scoring["started"] = True
                task_phase.describe("scoring", total=None, unit="batches", restart=True)
            task_phase.advance()

    step_hook = register_optimizer_step_post_hook(on_step)
    forward_hook = register_module_forward_hook(on_forward)
    try:
        yield
    finally:
        step_hook.remove()
        forward_hook.remove()
