"""In-process A/B of one training-step change: steps alternate A, B, B, A, ... on one model.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_variants.py fused_adamw --pairs 10

A machine shared with other jobs changes speed several-fold within a minute;
adjacent steps of one process see nearly the same load, so per-pair ratios B / A
are steadier than separate runs, and the best (minimum) step time of each side,
which interference can only lengthen, is the steadiest of all. Variants:

* ``fused_adamw``: A = AdamW as `optim.build_optimizer` makes it, B = the same
  groups with ``fused=True`` (one kernel for all parameters; optim.py unchanged).
* ``threads``: A = ``torch.get_num_threads()`` threads, B = 1 thread.
* ``compile``: A = eager, B = a second model with the same weights under
  ``train.compile=true`` (`models.vlp.compile_model`, trained inside `compiled_training()`
  as `train.run` does); its compilation is warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from workbench.bench.setup import TrainStep, Vocabulary, bench_config, build_pretrainer, to_device
from workbench.models.vlp import compiled_training


def _base_step(batch_size: int, root: Path, quick: bool, compile_: bool = False) -> tuple[TrainStep, dict]:
    from workbench.data import PretrainStream, load_tokenizer, prepare_data

    overrides = [f"data.root={root}", "data.shapes_size=tiny", f"train.compile={str(compile_).lower()}"]
    cfg = bench_config("base", quick=quick, overrides=overrides)
    cfg.train.batch_size = batch_size
    prepare_data(cfg.data)
    tokenizer = load_tokenizer(cfg.data)
    torch.manual_seed(0)  # the same weights in every step built here
    step = TrainStep(build_pretrainer(cfg, Vocabulary.of(tokenizer)), cfg, torch.device("cpu"))
    batch = to_device(next(PretrainStream(cfg, tokenizer, seed=0).batches(0)), step.device)
    return step, batch


Step = Callable[[dict], object]


def _variants(name: str, args: argparse.Namespace, root: Path) -> tuple[Step, Step, dict]:
    """(step A, step B, batch) for the named change."""
    step, batch = _base_step(args.batch_size, root, args.quick)
    if name == "fused_adamw":
        plain = step.optimizer
        fused = torch.optim.AdamW(
            [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in plain.param_groups],
            **{k: plain.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")},
            fused=True,
        )
        return (
            _with(lambda: setattr(step, "optimizer", plain), step),
            _with(lambda: setattr(step, "optimizer", fused), step),
            batch,
        )
    if name == "threads":
        threads = torch.get_num_threads()
        return _with(lambda: torch.set_num_threads(threads), step), _with(lambda: torch.set_num_threads(1), step), batch
    if name == "compile":  # a second model with the same weights, its encoders and fusion compiled
        compiled, _ = _base_step(args.batch_size, root, args.quick, compile_=True)
        return step, compiled, batch
    raise SystemExit(f"unknown variant {name!r}: fused_adamw, threads, compile")


def _with(switch: Callable[[], None], step: TrainStep) -> Step:
    def run(batch: dict) -> object:
        switch()
        return step(batch)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=["fused_adamw", "threads", "compile"])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny widths")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp, compiled_training():  # eager steps ignore it
        step_a, step_b, batch = _variants(args.variant, args, Path(tmp) / "shapesworld")
        for step in (step_a, step_b, step_b):  # warm both (optimizer state, allocator, compilation)
            step(batch)
        times: dict[str, list[float]] = {"A": [], "B": []}
        loads = []
        for pair in range(args.pairs):
            for side in "AB" if pair % 2 == 0 else "BA":
                step = step_a if side == "A" else step_b
                start = time.perf_counter()
                step(batch)
                times[side].append(time.perf_counter() - start)
                loads.append(os.getloadavg()[0])
            print(f"pair {pair}: A {times['A'][-1]:.3f} s, B {times['B'][-1]:.3f} s", file=sys.stderr)
    ratios = [b / a for a, b in zip(times["A"], times["B"], strict=True)]
    print(
        json.dumps(
            {
                "variant": args.variant,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "a_step_s": statistics.median(times["A"]),
                "b_step_s": statistics.median(times["B"]),
                "b_over_a": statistics.median(times["B"]) / statistics.median(times["A"]),
                "b_over_a_median_of_pairs": statistics.median(ratios),
                "pair_ratios": ratios,
                "a_best_s": min(times["A"]),
                "b_best_s": min(times["B"]),
                "b_over_a_best": min(times["B"]) / min(times["A"]),
                "a_times": times["A"],
                "b_times": times["B"],
                "load_average": [min(loads), max(loads)],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
