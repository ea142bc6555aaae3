"""The `workbench` command line. Thin: parse options, call a plain function, print.

Every command body is a call into a layer below (data, train, sweeps, reports,
tracking); errors from those layers become one line and an exit code here.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from workbench import cli_errors, errors, progress, report_paths
from workbench import cli_options as opt
from workbench.cli_errors import OneLineErrorsGroup, friendly
from workbench.cli_support import option_overrides, quiet_libraries
from workbench.errors import EXIT_USER_ERROR

# The layers below (torch, mlflow, optuna, ...) are imported inside each command, not here:
# `workbench --help`, `--version` and a mistyped option answer in a fraction of a second
# instead of after seconds of imports they do not need.
app = typer.Typer(
    cls=OneLineErrorsGroup,
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


@app.callback()
def main(debug: opt.Debug = False, version: opt.Version = False) -> None:
    cli_errors.debug = debug
    quiet_libraries()


# ------------------------------------------------------------------ config
@config_app.command("show")
@friendly
def config_show(experiment: opt.Experiment = "base", overrides: opt.Overrides = None) -> None:
    """Print the resolved config (defaults <- experiment YAML <- --set) as YAML."""
    from workbench.config import load_config, to_yaml

    typer.echo(to_yaml(load_config(experiment, option_overrides(overrides))), nl=False)


@config_app.command("keys")
@friendly
def config_keys(
    pattern: opt.KeyPattern = None,
) -> None:
    """List the config keys --set accepts: type, default and what each does."""
    from workbench.config.keys import matching, render

    found = matching(pattern)
    if not found:
        typer.echo(f"error: no config key matches {pattern!r} (workbench config keys lists them all)", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    typer.echo(render(found))


# -------------------------------------------------------------------- data
@data_app.command("shapes")
@friendly
def data_shapes(
    out: opt.ShapesOut = Path("data/shapesworld"), seed: opt.ShapesSeed = 0, size: opt.ShapesSize = "default"
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
    experiment: opt.Experiment = "base", overrides: opt.Overrides = None, decode: opt.DecodeMedia = True
) -> None:
    """Validate a data set before a long run: counts, missing files, unreadable images, caption lengths.

    Checks every file the configured run would read (pre-training files and each
    eval task's splits). Exit code 2 when anything is wrong.
    """
    from workbench.config import load_config
    from workbench.data.check_report import report_data_check

    cfg = load_config(experiment, option_overrides(overrides))
    if not report_data_check(cfg, decode=decode, echo=typer.echo):
        raise typer.Exit(EXIT_USER_ERROR)


@data_app.command("shard")
@friendly
def data_shard(
    src_root: opt.ShardSource,
    out_dir: opt.ShardOut,
    per_shard: opt.PerShard = 10_000,
    files: opt.ShardFiles = None,
    image_root: opt.ShardImageRoot = "",
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
    experiment: opt.Experiment = "base",
    overrides: opt.Overrides = None,
    out: opt.WarmStartOut = None,
    parts: opt.WarmStartParts = "vision,text",
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


# --------------------------------------------------------------------- run
@app.command()
@friendly
def run(
    experiment: opt.RunExperiment = None,
    overrides: opt.Overrides = None,
    device: opt.Device = None,
    tracking_uri: opt.TrackingUri = None,
    resume: opt.RunResume = None,
    rerun_of: opt.RerunOf = None,
    nproc: opt.Nproc = 1,
    quick: opt.Quick = False,
    no_eval: opt.NoEval = False,
    launcher: opt.RunLauncher = opt.Launcher.local,
    nodes: opt.Nodes = 1,
    gpus_per_node: opt.GpusPerNode = 0,
    partition: opt.Partition = None,
    cpus_per_task: opt.CpusPerTask = None,
    mem: opt.NodeMem = None,
    time_limit: opt.RunTimeLimit = None,
    sbatch_arg: opt.SbatchArg = None,
    wait: opt.RunWait = True,
) -> None:
    """Pre-train one configured model, evaluate it downstream, log all to MLflow.

    \b
    A full `base` run pre-trains 300 steps, then fine-tunes and scores five tasks.
    Quicker:  workbench run --quick          (minutes: shortened training and evaluation)
              workbench run -e demo          (the demo's small model, 200 steps)
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
    from workbench.run_command import RunRequest, run_training_command

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
        debug=cli_errors.debug,
    )
    _exit_with(run_training_command(request, echo=typer.echo, on_start=_announce))


def _exit_with(code: int) -> None:
    """A command's non-zero exit code (that of the processes or jobs it started) as the process's."""
    if code:
        raise typer.Exit(code)


def _announce(run_id: str, url: str) -> None:
    typer.echo(f"run {run_id} started" + (f"; MLflow: {url}" if url else ""))


@app.command("eval")
@friendly
def evaluate(
    run_id: opt.PretrainRun,
    task: opt.EvalTasks = None,
    overrides: opt.EvalOverrides = None,
    tracking_uri: opt.TrackingUri = None,
) -> None:
    """Evaluate a pre-trained checkpoint on downstream tasks.

    \b
    With the run's own evaluation settings the metrics are logged into that run.
    With --set eval.*=... (another re-ranking, fine-tune recipe, split) they go to a
    new run tagged workbench.evaluated_from=RUN_ID; the source run stays as it was.
    """
    from workbench import recorded_run

    metrics, logged_to = recorded_run.evaluate_run(run_id, tasks=task, tracking_uri=tracking_uri, overrides=overrides)
    for name, value in sorted(metrics.items()):
        typer.echo(f"{name}\t{value:.4f}")
    if logged_to != run_id:
        typer.echo(f"logged to a new run {logged_to} (workbench.evaluated_from={run_id})")


# ------------------------------------------------------------------- sweep
@app.command(no_args_is_help=True)
@friendly
def sweep(
    name: opt.SweepName,
    overrides: opt.Overrides = None,
    slots: opt.Slots = None,
    gpus: opt.Gpus = None,
    per_gpu: opt.PerGpu = 1,
    storage: opt.Storage = None,
    worker: opt.Worker = False,
    resume: opt.SweepResume = False,
    study_name: opt.StudyName = None,
    tracking_uri: opt.TrackingUri = None,
    heartbeat: opt.Heartbeat = 30,
    progress: opt.LiveProgress = True,
    yes: opt.Yes = False,
    launcher: opt.SweepLauncher = opt.Launcher.local,
    partition: opt.Partition = None,
    gpus_per_trial: opt.GpusPerTrial = 0,
    cpus_per_trial: opt.CpusPerTrial = None,
    mem: opt.WorkerMem = None,
    time_limit: opt.WorkerTimeLimit = None,
    max_parallel: opt.MaxParallel = 4,
    sbatch_arg: opt.SbatchArg = None,
    wait: opt.SweepWait = True,
    show_status: opt.ShowStatus = False,
    cancel: opt.Cancel = False,
    max_seeds: opt.MaxSeeds = None,
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
    parsed = dict(locals())  # the options above, by name: a SweepRequest's fields
    from workbench.sweep_command import SweepRequest, run_sweep_command

    _exit_with(run_sweep_command(SweepRequest(**parsed), echo=typer.echo))


# ------------------------------------------------------------------ report
@report_app.command("ablations")
@friendly
def report_ablations(
    sweeps: opt.SweepRefs = None,
    metric: opt.Metrics = None,
    fmt: opt.Formats = None,
    out: opt.ReportOut = report_paths.OUT_DIR,
    figures: opt.Figures = True,
    tracking_uri: opt.TrackingUri = None,
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
    run_id: opt.FinishedRun,
    compare: opt.CompareRun = None,
    n: opt.HeldOutImages = 8,
    out: opt.ReportOut = report_paths.OUT_DIR,
    tracking_uri: opt.TrackingUri = None,
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
    port: opt.Port = 5000,
    host: opt.Host = "127.0.0.1",
    open_browser: opt.OpenBrowser = False,
    tracking_uri: opt.TrackingUri = None,
) -> None:
    """Start the MLflow UI on the project's tracking store (127.0.0.1 unless --host); prints the runs table's URL."""
    from workbench.reports.ui import serve

    raise typer.Exit(serve(tracking_uri or "", host=host, port=port, echo=typer.echo, open_browser=open_browser))


# -------------------------------------------------------------------- runs
@runs_app.command("prune")
@friendly
def runs_prune(
    older_than: opt.OlderThan = 30.0,
    keep: opt.Keep = 0,
    experiment: opt.MlflowExperiments = None,
    out_dir: opt.CheckpointDir = Path("outputs"),
    dry_run: opt.DryRun = False,
    tracking_uri: opt.TrackingUri = None,
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
    out: opt.DemoOut = report_paths.OUT_DIR,
    slots: opt.DemoSlots = 2,
    tracking_uri: opt.TrackingUri = None,
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
    config: opt.BenchConfigs = None,
    quick: opt.BenchQuick = False,
    as_json: opt.AsJson = False,
    device: opt.Device = None,
    batch_size: opt.BatchSize = None,
    steps: opt.Steps = None,
    repeats: opt.Repeats = None,
    loop_steps: opt.LoopSteps = None,
    compile_step: opt.CompileStep = False,
    data_root: opt.DataRoot = None,
    overrides: opt.Overrides = None,
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
