"""The `workbench` command line. Thin: parse options, call a plain function, print.

Every command body is a call into a layer below (data, train, sweeps, reports,
tracking); errors from those layers become one line and an exit code here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from workbench import errors, interrupts, progress, report_paths
from workbench.cli_support import missing_equals, option_overrides, version_text

# The layers below (torch, mlflow, optuna, ...) are imported inside each command, not here:
# `workbench --help`, `--version` and a mistyped option answer in a fraction of a second
# instead of after seconds of imports they do not need.


class _Group(typer.core.TyperGroup):
    """The top-level group: `--set key value` gets a hint, not Click's "unexpected extra argument"."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        hint = missing_equals(args)
        if hint:
            typer.echo(hint, err=True)
            raise typer.Exit(2)
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Group,
    help="Ablation workbench for vision-language pre-training: run, sweep, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Generate and check data sets.", no_args_is_help=True)
config_app = typer.Typer(help="Show resolved run configs.", no_args_is_help=True)
report_app = typer.Typer(help="Ablation tables and attention figures from MLflow.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(report_app, name="report")
runs_app = typer.Typer(help="Housekeeping of stored runs (checkpoints).", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

_debug = False

Experiment = Annotated[
    str, typer.Option("--experiment", "-e", help="Experiment name under experiments/ or a YAML path.")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key, e.g. --set objectives.scl.mvsc=false (repeatable)."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."),
]


def friendly(fn: Callable) -> Callable:
    """Turn our errors into one line + exit code (2 = bad input, 1 = runtime, 128+N = signal N);
    anything unexpected into one line naming the command and a log file (workbench.crash)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with interrupts.sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except interrupts.Interrupted as err:
            _end_open_runs("KILLED")
            if not err.quiet:
                typer.echo(err.message(), err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            ended = _end_open_runs("KILLED")
            typer.echo("interrupted" + (f": MLflow run {', '.join(ended)} marked KILLED" if ended else ""), err=True)
            raise typer.Exit(130) from None
        except errors.USER_ERRORS + errors.RUNTIME_ERRORS + (OSError,) as err:
            _end_open_runs("FAILED")
            if _debug:
                raise
            typer.echo(errors.one_line(err), err=True)
            raise typer.Exit(errors.exit_code(err)) from None
        except Exception as err:  # the last resort: a bug or a case nobody foresaw
            if _debug:
                _end_open_runs("FAILED")
                raise
            from workbench import crash  # imports mlflow: only on this path

            typer.echo(crash.unexpected(_command_name(fn), err), err=True)
            raise typer.Exit(1) from None

    return wrapper


def _end_open_runs(status: str) -> list[str]:
    """End the MLflow runs this process left open (`tracking.end_open_runs`); mlflow is imported
    only when a command has failed, not before every command."""
    from workbench import tracking

    return tracking.end_open_runs(status)


def _command_name(fn: Callable) -> str:
    """'run', 'report ablations', 'runs prune', ...: the words a person typed, from the function's name
    (`<group>_<command>`; `evaluate` is `eval`, a Python builtin's name)."""
    return "eval" if fn.__name__ == "evaluate" else fn.__name__.replace("_", " ")


def _version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Versions of workbench, torch, mlflow, optuna."
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep the terminal for our progress and errors: no MLflow INFO lines or download bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ------------------------------------------------------------------ config
@config_app.command("show")
@friendly
def config_show(experiment: Experiment = "base", overrides: Overrides = None) -> None:
    """Print the resolved config (defaults <- experiment YAML <- --set) as YAML."""
    from workbench.config import load_config, to_yaml

    typer.echo(to_yaml(load_config(experiment, option_overrides(overrides))), nl=False)


@config_app.command("keys")
@friendly
def config_keys(
    pattern: Annotated[
        str | None, typer.Argument(help="Only keys containing this text, or matching this glob (train.*).")
    ] = None,
) -> None:
    """List the config keys --set accepts: type, default and what each does."""
    from workbench.config_keys import matching, render

    found = matching(pattern)
    if not found:
        typer.echo(f"error: no config key matches {pattern!r} (workbench config keys lists them all)", err=True)
        raise typer.Exit(2)
    typer.echo(render(found))


# -------------------------------------------------------------------- data
@data_app.command("shapes")
@friendly
def data_shapes(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the data set to.")] = Path("data/shapesworld"),
    seed: Annotated[int, typer.Option(help="Generator seed (same seed => same bytes).")] = 0,
    size: Annotated[str, typer.Option(help="tiny (seconds, tests) or default (the demo's size).")] = "default",
) -> None:
    """Generate ShapesWorld: images, captions, masks, videos, VQA, NLVR, VE, splits."""
    from workbench.data.shapes import generate

    errors.check_writable(out, "--out")
    manifest = generate(out, seed=seed, size=size)
    counts = ", ".join(f"{k}={v}" for k, v in manifest["counts"].items())
    typer.echo(f"ShapesWorld written to {out} ({counts})")


@data_app.command("check")
@friendly
def data_check(
    experiment: Experiment = "base",
    overrides: Overrides = None,
    decode: Annotated[
        bool,
        typer.Option("--decode/--no-decode", help="Open every image and video (--no-decode: only check they exist)."),
    ] = True,
) -> None:
    """Validate a data set before a long run: counts, missing files, unreadable images, caption lengths.

    Checks every file the configured run would read (pre-training files and each
    eval task's splits). Exit code 2 when anything is wrong.
    """
    from workbench.config import load_config
    from workbench.data import check_dataset, load_tokenizer

    cfg = load_config(experiment, option_overrides(overrides))
    problems: list[str] = []
    try:
        tokenizer = load_tokenizer(cfg.data)
    except errors.DataError as err:
        tokenizer, problems = None, [f"tokenizer: {errors.one_line(err).removeprefix('error: ')}"]
    summary = check_dataset(cfg, tokenizer, decode_media=decode)
    _print_check(summary)
    problems += [f"missing file: {path}" for path in summary["missing_files"]]
    problems += [
        problem if name in problem else f"{name}: {problem}"
        for name, report in summary["files"].items()
        for problem in report["problems"]
    ]
    typer.echo("\n".join(problems))
    if problems or not summary["ok"]:
        typer.echo(f"data check: problems found in {summary['root']} (listed above)", err=True)
        raise typer.Exit(2)
    entries = sum(report["entries"] for report in summary["files"].values())
    typer.echo(f"data check: OK — {len(summary['files'])} files, {entries} entries in {summary['root']}")


@data_app.command("shard")
@friendly
def data_shard(
    src_root: Annotated[Path, typer.Argument(help="Data set directory holding the ALBEF JSON pre-training files.")],
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the tar shards to.")],
    per_shard: Annotated[int, typer.Option("--per-shard", help="Samples per shard.")] = 10_000,
    files: Annotated[
        list[str] | None,
        typer.Option("--file", help="JSON file under SRC_ROOT (repeatable; default pretrain.json)."),
    ] = None,
    image_root: Annotated[
        str, typer.Option("--image-root", help="Where relative image paths resolve (default SRC_ROOT).")
    ] = "",
) -> None:
    """Convert ALBEF JSON pre-training pairs (+ their images) into webdataset-layout tar shards.

    Train from them with --set data.pretrain_shards='OUT_DIR/{000000..NNNNNN}.tar' (printed).
    """
    from workbench.data.shards import shard_dataset

    errors.check_writable(out_dir, "OUT_DIR")
    paths, pattern = shard_dataset(src_root, out_dir, per_shard, files or ["pretrain.json"], image_root)
    typer.echo(f"{len(paths)} shards written to {out_dir}; train from them with --set data.pretrain_shards='{pattern}'")


@data_app.command("warmstart")
@friendly
def data_warmstart(
    experiment: Experiment = "base",
    overrides: Overrides = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write here instead of the cache under data.root (then set model.<part>.init=PATH)."
        ),
    ] = None,
    parts: Annotated[str, typer.Option("--parts", help="vision, text or both (comma-separated).")] = "vision,text",
) -> None:
    """Uni-modal warm start: image-only and text-only pre-training on the data, before any VLP.

    Trains the configured ViT on ShapesWorld attribute recognition and the BERT on
    caption MLM, and caches the weights that `model.vision.init=warmstart` /
    `model.text.init=warmstart` load (runs make them themselves when missing).
    """
    from workbench.config import load_config
    from workbench.data import ensure_data, load_tokenizer
    from workbench.warmstart import cached_path, make

    cfg = load_config(experiment, option_overrides(overrides))
    chosen = [p.strip() for p in parts.split(",") if p.strip()]
    for part in chosen:
        if part not in ("vision", "text"):
            raise errors.ConfigError(f"--parts: {part!r} is not one of vision, text")
    if out is not None:
        errors.check_writable(out, "--out")
    ensure_data(cfg.data)
    tokenizer = load_tokenizer(cfg.data)
    for part in chosen:
        path = (out / f"{part}.pt") if out is not None else cached_path(cfg, part, len(tokenizer))
        metrics = make(cfg, tokenizer, part, path)
        shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items())
        typer.echo(f"warm start ({part}) written to {path} ({shown})")


def _print_check(summary: dict) -> None:
    """One table row per data file: counts, bad entries, unreadable media, text lengths."""
    from rich.console import Console
    from rich.table import Table

    def stats(values: dict | None) -> str:
        return f"{values['min']}/{values['mean']}/{values['max']}" if values else "-"

    names = [*summary["files"], *(Path(path).name for path in summary["missing_files"])]
    table = Table(title=f"data check: {summary['root']}", title_justify="left")
    table.add_column("file", no_wrap=True, min_width=max(map(len, names), default=4))
    table.add_column("kind", no_wrap=True)
    for column in (
        "entries",
        "bad",
        "unreadable",
        "words min/mean/max",
        "tokens min/mean/max",
        "truncated",
        "dup. captions %",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for name, report in summary["files"].items():
        bad = "unreadable file" if report["bad_entries"] is None else str(report["bad_entries"])
        table.add_row(
            name,
            report["kind"],
            str(report["entries"]),
            bad,
            str(report["unreadable"]),
            stats(report.get("text_words")),
            stats(report.get("text_tokens")),
            str(report.get("truncated", "-")),
            str(report.get("duplicate_captions", "-")),
        )
    for path in summary["missing_files"]:
        table.add_row(Path(path).name, "-", "missing", "-", "-", "-", "-", "-", "-")
    Console(highlight=False, width=max(160, Console().width)).print(table)


# --------------------------------------------------------------------- run
@app.command()
@friendly
def run(
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", "-e", help="Experiment name under experiments/ or a YAML path (default: base)."),
    ] = None,
    overrides: Overrides = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    tracking_uri: TrackingUri = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="MLflow run id to continue from its last checkpoint.")
    ] = None,
    rerun_of: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="MLflow run id to run again from its recorded config (--set may still change e.g. train.device).",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            help=(
                "Train on N local processes with DDP (one per GPU, or CPU processes) via torchrun; "
                "train.batch_size stays the global batch."
            ),
        ),
    ] = 1,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help=(
                "A run of minutes: 20 steps, ITC retrieval + a 10-step VQA fine-tune, a cached warm start or "
                "none (plumbing check, not results)."
            ),
        ),
    ] = False,
    no_eval: Annotated[
        bool, typer.Option("--no-eval", help="Pre-train only, no downstream evaluation (= --set eval.tasks=[]).")
    ] = False,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            help=(
                "local: this machine; slurm: one SLURM job of --nodes x --gpus-per-node ranks (CPU nodes: "
                "--nproc ranks each)."
            ),
        ),
    ] = "local",
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes of the SLURM job.", rich_help_panel="SLURM")] = 1,
    gpus_per_node: Annotated[
        int,
        typer.Option(
            "--gpus-per-node",
            help="GPUs per node, one rank each (0: --nproc CPU ranks per node).",
            rich_help_panel="SLURM",
        ),
    ] = 0,
    partition: Annotated[
        str | None,
        typer.Option("--partition", help="SLURM partition (default: the cluster's default).", rich_help_panel="SLURM"),
    ] = None,
    cpus_per_task: Annotated[
        int | None,
        typer.Option("--cpus-per-task", help="CPUs per rank (sbatch --cpus-per-task).", rich_help_panel="SLURM"),
    ] = None,
    mem: Annotated[
        str | None, typer.Option("--mem", help="Memory per node, e.g. 64G.", rich_help_panel="SLURM")
    ] = None,
    time_limit: Annotated[
        str | None,
        typer.Option("--time", help="Time limit, e.g. 24:00:00 (default: the partition's).", rich_help_panel="SLURM"),
    ] = None,
    sbatch_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--sbatch-arg",
            help="Another sbatch option, long form: --sbatch-arg=--account=abc (repeatable).",
            rich_help_panel="SLURM",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Wait for the SLURM job to end, or return once it is submitted.",
            rich_help_panel="SLURM",
        ),
    ] = True,
) -> None:
    """Pre-train one configured model, evaluate it downstream, log all to MLflow.

    \b
    A full `base` run pre-trains 300 steps, then fine-tunes and scores five tasks.
    Quicker:  workbench run --quick          (minutes: shortened training and evaluation)
              workbench run -e demo          (the demo's small model, 100 steps)
              workbench run --no-eval        (pre-training only; or --set eval.tasks=[])
    Keys and defaults: workbench config keys [PATTERN]
    \b
    Again, from a finished run's recorded config: `workbench run --from RUN_ID`
    (same config and seed on CPU => the same losses bit for bit; tagged workbench.rerun_of).
    Several GPUs: `workbench run --nproc 4 ...`, or several hosts:
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-endpoint=HOST:PORT -m workbench run ...
    On a SLURM cluster: `workbench run --launcher slurm --nodes 2 --gpus-per-node 8 ...`
    """
    from workbench.launch.slurm import SlurmResources
    from workbench.run_command import RunRequest, execute

    request = RunRequest(
        experiment=experiment,
        overrides=list(overrides or []),
        device=device,
        tracking_uri=tracking_uri,
        resume=resume,
        rerun_of=rerun_of,
        nproc=nproc,
        quick=quick,
        no_eval=no_eval,
        launcher=launcher,
        nodes=nodes,
        slurm=SlurmResources(partition, gpus_per_node, cpus_per_task, mem, time_limit, list(sbatch_arg or [])),
        wait=wait,
        debug=_debug,
    )
    code = execute(request, echo=typer.echo, on_start=_announce)
    if code:
        raise typer.Exit(code)


def _announce(run_id: str, url: str) -> None:
    typer.echo(f"run {run_id} started" + (f"; MLflow: {url}" if url else ""))


@app.command("eval")
@friendly
def evaluate(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a pre-training run.")],
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Task(s) to evaluate (default: the run's eval.tasks).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            help=(
                "Change an evaluation setting, e.g. --set eval.rerank_k=16 (only eval.*, the device and paths; "
                "repeatable)."
            ),
        ),
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Evaluate a pre-trained checkpoint on downstream tasks.

    \b
    With the run's own evaluation settings the metrics are logged into that run.
    With --set eval.*=... (another re-ranking, fine-tune recipe, split) they go to a
    new run tagged workbench.evaluated_from=RUN_ID; the source run stays as it was.
    """
    from workbench import train

    metrics, logged_to = train.evaluate_run(run_id, tasks=task, tracking_uri=tracking_uri, overrides=overrides)
    for name, value in sorted(metrics.items()):
        typer.echo(f"{name}\t{value:.4f}")
    if logged_to != run_id:
        typer.echo(f"logged to a new run {logged_to} (workbench.evaluated_from={run_id})")


# ------------------------------------------------------------------- sweep
@app.command(no_args_is_help=True)
@friendly
def sweep(
    name: Annotated[str, typer.Argument(help="`list`, a sweep name from experiments/sweeps/, or a sweep YAML path.")],
    overrides: Overrides = None,
    slots: Annotated[int | None, typer.Option("--slots", help="Run N trials at once as CPU processes.")] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="One trial per GPU at once, e.g. --gpus 0,1,2,3 (default: all visible GPUs, else 1 CPU slot).",
        ),
    ] = None,
    per_gpu: Annotated[int, typer.Option("--per-gpu", help="Pack K small trials on each GPU.")] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help=(
                "Optuna storage: an RDB URL (postgresql://..., mysql://...) shared by hosts, or a journal file "
                "(default: <train.out_dir>/sweeps/optuna-journal.log)."
            ),
        ),
    ] = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker",
            help="Join an existing study (e.g. from another host with the same --storage) and run its queued trials.",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help=(
                "Finish an existing study (running the sweep again does the same, but --resume refuses to start "
                "a new one)."
            ),
        ),
    ] = False,
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="Optuna study name (default: the sweep's name).")
    ] = None,
    tracking_uri: TrackingUri = None,
    heartbeat: Annotated[
        int,
        typer.Option(
            "--heartbeat",
            help="Seconds between trial heartbeats on RDB storages; a trial silent for 2x is failed and retried.",
        ),
    ] = 30,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Live per-slot progress on the terminal.")
    ] = True,
    yes: Annotated[
        bool, typer.Option("--yes", help="Start a sweep of more than 200 trials (its estimated compute is printed).")
    ] = False,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            help=(
                "local: trials run on this machine; slurm: in SLURM worker jobs (see README, Running on a SLURM "
                "cluster)."
            ),
        ),
    ] = "local",
    partition: Annotated[
        str | None,
        typer.Option("--partition", help="SLURM partition (default: the cluster's default).", rich_help_panel="SLURM"),
    ] = None,
    gpus_per_trial: Annotated[
        int, typer.Option("--gpus-per-trial", help="GPUs of each worker job: 0 (CPU) or 1.", rich_help_panel="SLURM")
    ] = 0,
    cpus_per_trial: Annotated[
        int | None,
        typer.Option(
            "--cpus-per-trial", help="CPUs of each worker job (sbatch --cpus-per-task).", rich_help_panel="SLURM"
        ),
    ] = None,
    mem: Annotated[
        str | None,
        typer.Option("--mem", help="Memory per worker job, e.g. 32G (sbatch --mem).", rich_help_panel="SLURM"),
    ] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Time limit per worker job, e.g. 4:00:00 (default: the partition's).",
            rich_help_panel="SLURM",
        ),
    ] = None,
    max_parallel: Annotated[
        int,
        typer.Option(
            "--max-parallel", help="Worker jobs at once (each runs one trial at a time).", rich_help_panel="SLURM"
        ),
    ] = 4,
    sbatch_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--sbatch-arg",
            help="Another sbatch option, long form: --sbatch-arg=--account=abc (repeatable).",
            rich_help_panel="SLURM",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Watch the jobs until the sweep ends, or return once they are submitted.",
            rich_help_panel="SLURM",
        ),
    ] = True,
    show_status: Annotated[
        bool, typer.Option("--status", help="Show each trial's state, SLURM job and node, and the queued jobs.")
    ] = False,
    cancel: Annotated[
        bool,
        typer.Option(
            "--cancel", help="Cancel the sweep's SLURM jobs (their trials are re-queued).", rich_help_panel="SLURM"
        ),
    ] = False,
    max_seeds: Annotated[
        int | None,
        typer.Option(
            "--max-seeds",
            help="Adaptive seeds (seeds: {min, max} in the spec): the most seeds a comparison may get; replaces max.",
        ),
    ] = None,
) -> None:
    """Run a named ablation sweep: each variant x seed as a trial of an Optuna study.

    \b
    workbench sweep list                    the named sweeps
    workbench sweep mask-ratio --slots 2    run (or resume) on 2 CPU processes
    workbench sweep my.yaml --gpus 0,1 --per-gpu 2
    workbench sweep NAME --storage postgresql://... --worker   (another host)
    workbench sweep NAME --launcher slurm --partition gpu --gpus-per-trial 1 --max-parallel 8

    Each trial runs in its own process and is logged to MLflow as a child run of
    the sweep's parent run. Running a sweep again (or --resume) after Ctrl-C or a
    crash finishes only the trials that are missing.
    """
    from workbench import sweeps
    from workbench.launch.slurm import SlurmResources
    from workbench.sweep_command import execute
    from workbench.sweeps.slurm import SlurmSweepOptions

    options = sweeps.SweepOptions(
        storage=storage,
        study_name=study_name,
        worker=worker,
        resume=resume,
        gpus=gpus,
        per_gpu=per_gpu,
        slots=slots,
        tracking_uri=tracking_uri,
        heartbeat_s=heartbeat,
        progress=progress,
        yes=yes,
        max_seeds=max_seeds,
    )
    on_slurm = SlurmSweepOptions(
        SlurmResources(partition, gpus_per_trial, cpus_per_trial, mem, time_limit, list(sbatch_arg or [])),
        max_parallel=max_parallel,
        wait=wait,
    )
    code = execute(
        name,
        list(overrides or []),
        options,
        launcher=launcher,
        on_slurm=on_slurm,
        show_status=show_status,
        cancel=cancel,
        echo=typer.echo,
    )
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------ report
ReportOut = Annotated[Path, typer.Option("--out", help="Directory for tables, figures and index.html.")]


@report_app.command("ablations")
@friendly
def report_ablations(
    sweeps: Annotated[
        list[str] | None, typer.Argument(help="Sweep names or parent run ids (default: every sweep).")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric", "-m", help="Metric column, e.g. retrieval/tr_r1 or vqa (repeatable; default: the sweep's)."
        ),
    ] = None,
    fmt: Annotated[
        list[str] | None, typer.Option("--format", "-f", help="md | csv | latex | html (repeatable; default: all).")
    ] = None,
    out: ReportOut = report_paths.OUT_DIR,
    figures: Annotated[
        bool,
        typer.Option(
            "--figures/--no-figures", help="Also draw the sweep's figure (heatmap / line / bars) and training curves."
        ),
    ] = True,
    tracking_uri: TrackingUri = None,
) -> None:
    """Ablation tables (mean ± std over seeds, Δ vs baseline, Holm-corrected paired t-test, reference row)
    and figures."""
    from workbench.reports.ablations import report_ablations as build
    from workbench.reports.tables import FORMATS, to_markdown

    result = build(
        sweeps or [],
        metrics=metric or [],
        formats=fmt or list(FORMATS),
        out=out,
        tracking_uri=tracking_uri or "",
        with_figures=figures,
    )
    for report in result.sweeps.values():
        typer.echo(to_markdown(report.table, details=False))
        typer.echo("\n".join(f"wrote {path}" for path in report.files))
    typer.echo(f"index: {result.index} ({result.runs_read} runs read)")


@report_app.command("attention")
@friendly
def report_attention(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a finished pre-training run.")],
    compare: Annotated[str | None, typer.Option("--compare", help="A second run id, drawn side by side.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of held-out images.")] = 8,
    out: ReportOut = report_paths.OUT_DIR,
    tracking_uri: TrackingUri = None,
) -> None:
    """Cross-attention and Grad-CAM maps per word for held-out images, plus in-object scores."""
    from workbench.reports.attention_figure import report_attention as build
    from workbench.reports.attention_figure import scores_markdown

    result = build(run_id, compare, n=n, out=out, tracking_uri=tracking_uri or "")
    typer.echo(scores_markdown(result.scores))
    typer.echo("\n".join(f"wrote {path}" for path in result.files))
    typer.echo(f"index: {result.index}")


# ---------------------------------------------------------------------- ui
@app.command()
@friendly
def ui(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to bind; only this machine by default.")] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open", help="Open the runs table in a web browser.")] = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Start the MLflow UI on the project's tracking store (127.0.0.1 unless --host); prints the runs table's URL."""
    from workbench.reports.ui import serve

    raise typer.Exit(serve(tracking_uri or "", host=host, port=port, echo=typer.echo, open_browser=open_browser))


# -------------------------------------------------------------------- runs
@runs_app.command("prune")
@friendly
def runs_prune(
    older_than: Annotated[
        float, typer.Option("--older-than", help="Only runs that ended at least this many days ago.")
    ] = 30.0,
    keep: Annotated[
        int,
        typer.Option(
            "--keep",
            help=(
                "Keep the checkpoints of the newest N ended runs of each experiment and config (-e experiment, "
                "sweep variant); runs made by `workbench eval` have none and do not count."
            ),
        ),
    ] = 0,
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="Only this MLflow experiment (repeatable).")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="train.out_dir the runs wrote local checkpoints to.")
    ] = Path("outputs"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted, delete nothing.")] = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Delete the checkpoints of old ended runs (metrics, params and configs stay; RUNNING runs are never touched).

    A pruned run is tagged workbench.checkpoint_pruned and can no longer be resumed,
    re-evaluated or drawn in attention figures.
    """
    from workbench.prune import plan_prune, prune

    plan = plan_prune(
        tracking_uri or "", older_than_days=older_than, keep=keep, out_dir=str(out_dir), experiments=experiment
    )
    typer.echo(plan.table())
    if plan.runs and not dry_run:
        typer.echo(f"pruned the checkpoints of {prune(plan, tracking_uri or '')} run(s)")


# -------------------------------------------------------------------- demo
@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the report goes.")] = report_paths.OUT_DIR,
    slots: Annotated[int, typer.Option("--slots", min=1, help="Trials run at once (CPU processes).")] = 2,
    tracking_uri: TrackingUri = None,
) -> None:
    """The whole workflow on the embedded data: ShapesWorld, an SCL ablation sweep, its report."""
    from workbench.demo import run_demo

    result = run_demo(out=out, slots=slots, tracking_uri=tracking_uri or "")
    typer.echo(result.table)
    typer.echo(f"\nreport: {out / 'index.html'}  ({len(result.files)} files)")
    typer.echo(f"runs:   workbench ui   (MLflow UI on {result.tracking_uri})")


# ------------------------------------------------------------------- bench
@app.command()
@friendly
def bench(
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="base | paper (repeatable; default: both).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny widths, one step per measurement: a smoke test.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of tables.")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Pairs per step (default: the config's; paper on CPU: 2).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Timed steps per block (default 3).")] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", help="Timed blocks; medians are reported (default 3).")
    ] = None,
    loop_steps: Annotated[
        int | None,
        typer.Option("--loop-steps", help="Steps per block of the data/tracking loop (default train.log_every)."),
    ] = None,
    compile_step: Annotated[bool, typer.Option("--compile", help="Benchmark with train.compile=true.")] = False,
    data_root: Annotated[
        str | None,
        typer.Option("--data-root", help="Data set for the base config (default: tiny ShapesWorld in a temp dir)."),
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Samples/s, MFU and where a pre-training step's time goes: objectives, fusion passes, data, tracking."""
    import json

    from workbench import bench as benchmark

    options = benchmark.BenchOptions(
        configs=tuple(config or benchmark.BenchOptions().configs),
        quick=quick,
        device=device or "auto",
        batch_size=batch_size,
        steps=steps,
        repeats=repeats,
        loop_steps=loop_steps,
        compile=compile_step,
        data_root=data_root or "",
        overrides=list(overrides or []),
    )
    with progress.on_stderr() if as_json else contextlib.nullcontext():  # stdout: the JSON alone
        result = benchmark.run_bench(options)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else benchmark.render(result))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
