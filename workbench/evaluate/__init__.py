"""Downstream evaluation: retrieval (image/video), VQA, NLVR2, VE fine-tunes, attention score.

`evaluate_all(model, objectives, cfg, tokenizer, device)` is the entry point; the
metric names it returns are listed in `workbench.evaluate.runner`.
"""

from workbench.evaluate.runner import TASKS, evaluate_all

__all__ = ["TASKS", "evaluate_all"]
