"""Does the embedded benchmark measure anything? Random-init control vs a pre-trained model, per task.

    python benchmarks/bench_science.py [--experiment base] [--seeds 3] [--out outputs/bench_science] [--set k=v ...]
    python benchmarks/bench_science.py --only-seed 1 ...   # e.g. a second process; then run without it for the table
    python benchmarks/bench_science.py --variant scl-off=objectives.scl.enabled=false   # + an ablation column

For each seed, two complete runs of the experiment through `workbench.train.run`
(real MLflow store under --out): `trained` (its pre-training budget) and
`random-init` (`train.steps=0`: the same fine-tunes from the initial weights).
Prints per task: metric | chance | majority | blind | random-init | trained
(mean ± std over seeds) | p(trained > reference) | p(trained > random-init).
Each `--variant NAME=KEY=VALUE[,KEY=VALUE]` adds runs of the experiment with those
overrides (an ablation: the component off) and two columns, NAME and
p(trained > NAME), paired by seed.
The reference is the blind baseline where there is one, else chance; p values are
one-sided t-tests over seeds (one-sample against the reference, paired against
random-init). Each finished run's metrics are kept in --out/<variant>-seed<k>.json,
so an interrupted benchmark resumes where it stopped. Not a test: minutes to hours on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from scipy import stats

from workbench import train
from workbench.config import load_config

TASKS = (
    ("retrieval", "r_mean"),
    ("retrieval", "tr_r1"),
    ("retrieval", "ir_r1"),
    ("video_retrieval", "r_mean"),
    ("vqa", "acc"),
    ("nlvr", "acc"),
    ("ve", "acc"),
)
VARIANTS = {"random-init": ["train.steps=0"], "trained": []}


def run_once(
    experiment: str, overrides: list[str], variant: str, seed: int, out: Path, variants: dict[str, list[str]]
) -> dict[str, float]:
    path = out / f"{variant}-seed{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    extra = [
        f"tracking.uri=sqlite:///{out.resolve()}/mlflow.db",
        f"train.out_dir={out}/checkpoints",
        "tracking.experiment=bench-science",
        f"tracking.run_name={variant}-seed{seed}",
        f"train.seed={seed}",
    ]
    cfg = load_config(experiment, [*overrides, *extra, *variants[variant]])
    result = train.run(cfg, progress=True, tags={"workbench.variant": variant})
    finished = MlflowClient(cfg.tracking.uri).get_run(result.run_id).data.metrics
    metrics = {**result.metrics, **{k: v for k, v in finished.items() if k.startswith("train/loss/")}}
    path.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics


def p_greater(values: np.ndarray, reference) -> float:
    """One-sided p of mean(values) > reference (a number, or paired values); nan when undefined."""
    diff = values - reference
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return 0.0 if len(diff) >= 2 and diff[0] > 0 else float("nan")
    return float(stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue)


def fmt(values: np.ndarray) -> str:
    return f"{values.mean():6.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:5.2f}"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    ablations = [name for name in results if name not in VARIANTS]
    extra_head = "".join(f" {name} | p(trained > {name}) |" for name in ablations)
    lines = [
        "| metric | chance | majority | blind | random-init | trained | p(trained > ref) | p(trained > random-init) |"
        + extra_head,
        "|---|---|---|---|---|---|---|---|" + "---|---|" * len(ablations),
    ]
    for task, key in TASKS:
        name = f"eval/{task}/{key}"
        if not all(name in run for runs in results.values() for run in runs):
            continue
        first = results["trained"][0]
        refs = {kind: first.get(f"eval/{task}/{kind}_{key}", math.nan) for kind in ("chance", "majority", "blind")}
        random_init = np.array([run[name] for run in results["random-init"]])
        trained = np.array([run[name] for run in results["trained"]])
        reference = refs["blind"] if not math.isnan(refs["blind"]) else refs["chance"]
        cells = ["-" if math.isnan(v) else f"{v:.2f}" for v in refs.values()]
        extra = ""
        for ablation in ablations:
            values = np.array([run[name] for run in results[ablation]])
            extra += f" {fmt(values)} | {p_greater(trained, values):.3g} |"
        lines.append(
            f"| {name} | {' | '.join(cells)} | {fmt(random_init)} | {fmt(trained)} | "
            f"{p_greater(trained, reference):.3g} | {p_greater(trained, random_init):.3g} |" + extra
        )
    return "\n".join(lines)


ITM_PRIOR_LOSS = -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3)  # cross-entropy of the 1:2 prior: 0.6365


def itm_table(results: dict[str, list[dict[str, float]]]) -> str:
    """What ITM adds, trained runs paired by seed: does re-ranking raise r_mean over ITC's own
    ranking, is ITM's loss below its prior, does an object word's Grad-CAM land on the object?"""
    trained = results["trained"]
    lines = ["| trained | reference | value | p(value > reference) |", "|---|---|---|---|"]
    for task in ("retrieval", "video_retrieval"):
        itc_name, final_name = f"eval/{task}_itc/r_mean", f"eval/{task}/r_mean"
        if all(itc_name in run for run in trained):
            itc, final = (np.array([run[name] for run in trained]) for name in (itc_name, final_name))
            lines.append(
                f"| {task} r_mean re-ranked (eval.rerank_k) | ITC only {fmt(itc)} | {fmt(final)} | "
                f"{p_greater(final, itc):.3g} |"
            )
    if all("train/loss/itm" in run for run in trained):
        itm = np.array([run["train/loss/itm"] for run in trained])
        lines.append(
            f"| final ITM loss | 1:2 prior {ITM_PRIOR_LOSS:.4f} | {fmt(itm)} | "
            f"{p_greater(ITM_PRIOR_LOSS - itm, 0.0):.3g} (below prior) |"
        )
    if all("eval/attention/gradcam_in_object" in run for run in trained):
        inside, area = (
            np.array([run[f"eval/attention/{key}"] for run in trained]) * 100
            for key in ("gradcam_in_object", "object_area")
        )
        beats = np.array([run["eval/attention/gradcam_beats_area"] for run in trained]) * 100
        lines.append(
            f"| Grad-CAM share in the named object (%) | object area {fmt(area)} | {fmt(inside)} | "
            f"{p_greater(inside, area):.3g} |"
        )
        lines.append(f"| images where Grad-CAM beats the area (%) | 50 | {fmt(beats)} | {p_greater(beats, 50.0):.3g} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="base")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_science"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--only-seed",
        type=int,
        action="append",
        default=[],
        help="run only these seeds (e.g. one process per core); the table needs all",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[,KEY=VALUE]",
        help="an ablation variant: the experiment with these overrides (repeatable)",
    )
    parser.add_argument("--only-variant", action="append", default=[], help="with --only-seed: run only these variants")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        if not name or "=" not in overrides or name in VARIANTS:
            parser.error(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE], NAME not one of {list(VARIANTS)}")
        variants[name] = overrides.split(",")
    unknown = set(args.only_variant) - set(variants)
    if unknown:
        parser.error(f"--only-variant {sorted(unknown)}: not one of {list(variants)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only_seed:
        for seed in args.only_seed:
            for variant in args.only_variant or variants:
                run_once(args.experiment, args.overrides, variant, seed, args.out, variants)
        return
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    for seed in range(args.seeds):
        for variant in variants:
            results[variant].append(run_once(args.experiment, args.overrides, variant, seed, args.out, variants))
    print(f"experiment {args.experiment} {' '.join(args.overrides)}, {args.seeds} seeds, eval split of the config")
    print(table(results))
    print()
    print(itm_table(results))


if __name__ == "__main__":
    main()
