"""A/B benchmark of the training step between two source trees (before / after a change).

    cp -r workbench /tmp/before/          # snapshot, then edit the code
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_ab.py --a /tmp/before --b . --rounds 4

Each round runs one worker process per tree (order alternating A B, B A, ...), each
timing `--steps` full training steps (forward, backward, clip, AdamW) after one
warm-up step on the same batch; the medians over rounds give the ratio B / A, so a
load change on the machine hits both sides alike. Workers use only the public API
both trees share (config, train.build, optim, data, models, objectives).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALL_ON = ["objectives.softmask.enabled=true"]
PAPER = [
    "model.vision.timm_name=",
    "model.vision.checkpoint=",
    "model.text.hf_name=",
    "data.image_size=224",
    "data.generate=false",
    "train.precision=auto",
]


def worker(args: argparse.Namespace) -> None:
    import torch

    from workbench.config import load_config
    from workbench.device import seed_everything
    from workbench.optim import build_optimizer, build_scheduler

    try:
        from workbench.pretrainer import Pretrainer
    except ImportError:  # trees from before it had a module of its own
        from workbench.train import Pretrainer

    if args.config == "base":
        from workbench.data import PretrainStream, load_tokenizer
        from workbench.objectives import special_ids_of

        cfg = load_config(
            "base",
            ALL_ON
            + [f"data.root={args.data}", "data.shapes_size=tiny", f"train.batch_size={args.batch_size}"]
            + args.overrides,
        )
        tokenizer = load_tokenizer(cfg.data)
        vocab, pad, special = len(tokenizer), tokenizer.pad_token_id, special_ids_of(tokenizer)
        seed_everything(0)
        batch = next(PretrainStream(cfg, tokenizer, seed=0).batches(0))
    else:
        cfg = load_config("paper", ALL_ON + PAPER + args.overrides)
        vocab, pad, special = 30522, 0, {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
        g = torch.Generator().manual_seed(0)
        length, size = cfg.data.max_text_len, args.batch_size
        ids = torch.randint(104, vocab, (size, length), generator=g)
        ids[:, 0], ids[:, -1] = 101, 102
        batch = {
            "image": torch.randn(size, 1, 3, 224, 224, generator=g),
            "text_ids": ids,
            "text_mask": torch.ones(size, length, dtype=torch.long),
            "image_id": torch.arange(size),
        }
    from workbench.models import VLPModel
    from workbench.objectives import build_objectives

    seed_everything(0)
    model = VLPModel(
        cfg.model,
        vocab_size=vocab,
        pad_token_id=pad,
        image_size=cfg.data.image_size,
        max_text_len=cfg.data.max_text_len,
    )
    pretrainer = Pretrainer(model, build_objectives(cfg.objectives, model.dims, special, vocab, model=model)).train()
    optimizer = build_optimizer(pretrainer.model, pretrainer.objectives, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    params = [p for p in pretrainer.parameters() if p.requires_grad]

    def step() -> float:
        out = pretrainer(batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        return float(out["loss"])

    first_loss = step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"step_s": times, "first_loss": first_loss, "load": os.getloadavg()[0]}))


def run_worker(tree: Path, args: argparse.Namespace, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--config",
        args.config,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--data",
        str(data),
    ]
    command += [f"--set={o}" for o in args.overrides]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(f"worker for {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, help="source tree A (holds workbench/)")
    parser.add_argument("--b", type=Path, help="source tree B")
    parser.add_argument("--config", choices=["base", "paper"], default="base")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch_size = args.batch_size or (32 if args.config == "base" else 2)
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        data = Path(tmp) / "shapesworld"
        if args.config == "base":
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from workbench.data.shapes import generate; generate({str(data)!r}, seed=0, size='tiny')",
                ],
                check=True,
                env={**os.environ, "PYTHONPATH": str(args.a.resolve())},
            )
        results: dict[str, list[float]] = {"A": [], "B": []}
        losses, loads = {}, []
        for round_ in range(args.rounds):
            order = [("A", args.a), ("B", args.b)][:: 1 if round_ % 2 == 0 else -1]
            for name, tree in order:
                out = run_worker(tree, args, data)
                results[name].append(statistics.median(out["step_s"]))
                losses[name] = out["first_loss"]
                loads.append(out["load"])
                print(
                    f"round {round_} {name}: {statistics.median(out['step_s']):.3f} s/step (load {out['load']:.1f})",
                    file=sys.stderr,
                )
    a, b = statistics.median(results["A"]), statistics.median(results["B"])
    per_round = [rb / ra for ra, rb in zip(results["A"], results["B"], strict=True)]
    print(
        json.dumps(
            {
                "config": args.config,
                "batch_size": args.batch_size,
                "rounds": args.rounds,
                "steps": args.steps,
                "a": str(args.a),
                "b": str(args.b),
                "a_step_s": a,
                "b_step_s": b,
                "b_over_a": b / a,
                "b_over_a_per_round": per_round,
                "b_over_a_median_of_rounds": statistics.median(per_round),
                "a_rounds": results["A"],
                "b_rounds": results["B"],
                "first_loss": losses,
                "load_average": [min(loads), max(loads)],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
