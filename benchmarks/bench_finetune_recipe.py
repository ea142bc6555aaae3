"""Fine-tune recipes on one pre-trained model: accuracy (mean ± std over seeds) and CPU seconds.

    nice -n 10 /work/notes/py benchmarks/bench_finetune_recipe.py RUN_ID --tracking-uri sqlite:///mlflow.db \
        --recipe 600:5e-4 --recipe 200:1e-3 --seeds 0 1 --json out.json

Loads the run's final checkpoint (a finished `workbench run`, e.g. `--no-eval`) and,
for each `--recipe STEPS:LR` and each fine-tune seed (`train.seed`: head init and
shuffling), fine-tunes VQA, NLVR and VE exactly as evaluation does
(`evaluate.finetune.finetuned`), printing accuracy per task and the CPU seconds each
took. It answers "does a cheaper recipe measure the same?" before a config changes
its `eval.finetune_steps`: a recipe is a like-for-like replacement when its mean is
within the seeds' spread of the current one on every task. Not a test: minutes to
hours on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

TASK_NAMES = ("vqa", "nlvr", "ve")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--tracking-uri", default="")
    parser.add_argument("--recipe", action="append", default=[], help="STEPS:LR (repeatable; default: the run's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from workbench import recorded_run
    from workbench.evaluate.finetune import finetuned
    from workbench.evaluate.nlvr import NLVR
    from workbench.evaluate.ve import VE
    from workbench.evaluate.vqa import VQA

    tasks = {"vqa": VQA, "nlvr": NLVR, "ve": VE}
    cfg = recorded_run.load_run_config(args.run_id, args.tracking_uri, ["train.device=cpu", *args.overrides])
    recipes = args.recipe or [f"{cfg.eval.finetune_steps}:{cfg.eval.finetune_lr}"]
    device = torch.device("cpu")
    rebuilt = recorded_run.rebuild(args.run_id, cfg, device)  # as `workbench eval` restores it
    model, tokenizer = rebuilt.pretrainer.model.eval(), rebuilt.tokenizer
    print(f"run {args.run_id}: step {rebuilt.step}; fine-tune seeds {args.seeds}")

    results: dict[str, dict] = {}
    for recipe in recipes:
        steps, lr = recipe.split(":")
        cfg.eval.finetune_steps, cfg.eval.finetune_lr = int(steps), float(lr)
        row = results.setdefault(recipe, {})
        for name in args.tasks:
            accs, cpu = [], []
            for seed in args.seeds:
                cfg.train.seed = seed
                start = time.process_time()
                accs.append(finetuned(tasks[name], model, cfg, tokenizer, device)[2])
                cpu.append(time.process_time() - start)
            row[name] = {"acc": accs, "cpu_s": statistics.mean(cpu)}
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(
                f"  {recipe:>12} {name:<5} acc {statistics.mean(accs):6.2f} ± {spread:5.2f} "
                f"{[round(a, 2) for a in accs]}  {statistics.mean(cpu):6.1f} CPU s",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"run_id": args.run_id, "seeds": args.seeds, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
