"""Does pre-training learn anything? Retrieval of a `base`-budget model vs a random init.

    python benchmarks/bench_retrieval_vs_random.py [--set train.steps=300 ...]

Trains the `base` experiment (plus any --set overrides) on ShapesWorld with
`workbench.train.run`, then evaluates the same architecture with its random
initial weights (same seed, no training) on the same held-out split, and prints
TR@1 / IR@1 / r_mean for both. Not a test: it takes minutes on CPU.
"""

from __future__ import annotations

import argparse
import tempfile

from workbench import train
from workbench.config import load_config
from workbench.data import load_tokenizer, prepare_data
from workbench.device import resolve_device, seed_everything
from workbench.evaluate.retrieval import evaluate_retrieval
from workbench.pretrainer import build

KEYS = ("tr_r1", "ir_r1", "r_mean")


def random_init_metrics(cfg) -> dict[str, float]:
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    prepare_data(cfg.data)
    tokenizer = load_tokenizer(cfg.data)
    pretrainer = build(cfg, tokenizer).to(device)
    return evaluate_retrieval(pretrainer.model, pretrainer.objectives, cfg, tokenizer, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"train.out_dir={tmp}/out", "eval.tasks=[retrieval]"]
        cfg = load_config("base", overrides + args.overrides)
        trained = train.run(cfg).metrics
        untrained = random_init_metrics(cfg)
    print(f"\n{'metric':<28}{'random init':>12}{'trained':>12}")
    for prefix in ("eval/retrieval", "eval/retrieval_itc"):
        for key in KEYS:
            name = f"{prefix}/{key}"
            print(f"{name:<28}{untrained.get(name, float('nan')):>12.2f}{trained.get(name, float('nan')):>12.2f}")


if __name__ == "__main__":
    main()
