"""The options of the `workbench` commands, declared once as annotated types.

cli.py's commands name their parameters with these (`nproc: Nproc = 1`), so a command
reads as the list of what it takes and its body as the call it makes; the flags, their
help text and their panels live here. Shared options (`--set`, `--tracking-uri`,
`--device`) are one type used by every command that has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.cli_support import print_version
from workbench.launch import Launcher

SLURM = "SLURM"  # the help panel of the cluster options

# ------------------------------------------------------------------ shared
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]
Version = Annotated[
    bool,
    typer.Option(
        "--version", callback=print_version, is_eager=True, help="Versions of workbench, torch, mlflow, optuna."
    ),
]
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
Device = Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")]
ReportOut = Annotated[Path, typer.Option("--out", help="Directory for tables, figures and index.html.")]
SbatchArg = Annotated[
    list[str] | None,
    typer.Option(
        "--sbatch-arg",
        help="Another sbatch option, long form: --sbatch-arg=--account=abc (repeatable).",
        rich_help_panel=SLURM,
    ),
]
Partition = Annotated[
    str | None,
    typer.Option("--partition", help="SLURM partition (default: the cluster's default).", rich_help_panel=SLURM),
]

# ------------------------------------------------------------------ config
KeyPattern = Annotated[
    str | None, typer.Argument(help="Only keys containing this text, or matching this glob (train.*).")
]

# -------------------------------------------------------------------- data
ShapesOut = Annotated[Path, typer.Option("--out", help="Directory to write the data set to.")]
ShapesSeed = Annotated[int, typer.Option(help="Generator seed (same seed => same bytes).")]
ShapesSize = Annotated[str, typer.Option(help="tiny (seconds, tests) or default (the demo's size).")]
DecodeMedia = Annotated[
    bool,
    typer.Option("--decode/--no-decode", help="Open every image and video (--no-decode: only check they exist)."),
]
ShardSource = Annotated[Path, typer.Argument(help="Data set directory holding the ALBEF JSON pre-training files.")]
ShardOut = Annotated[Path, typer.Argument(help="Directory to write the tar shards to.")]
ShardFiles = Annotated[
    list[str] | None,
    typer.Option("--file", help="JSON file under SRC_ROOT (repeatable; default pretrain.json)."),
]
ShardImageRoot = Annotated[
    str, typer.Option("--image-root", help="Where relative image paths resolve (default SRC_ROOT).")
]
WarmStartOut = Annotated[
    Path | None,
    typer.Option("--out", help="Write here instead of the cache under data.root (then set model.<part>.init=PATH)."),
]

PerShard = Annotated[int, typer.Option("--per-shard", help="Samples per shard.")]
WarmStartParts = Annotated[str, typer.Option("--parts", help="vision, text or both (comma-separated).")]

# --------------------------------------------------------------------- run
RunExperiment = Annotated[
    str | None,
    typer.Option("--experiment", "-e", help="Experiment name under experiments/ or a YAML path (default: base)."),
]
RunResume = Annotated[str | None, typer.Option("--resume", help="MLflow run id to continue from its last checkpoint.")]
RerunOf = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="MLflow run id to run again from its recorded config (--set may still change e.g. train.device).",
    ),
]
Nproc = Annotated[
    int,
    typer.Option(
        "--nproc",
        help=(
            "Train on N local processes with DDP (one per GPU, or CPU processes) via torchrun; "
            "train.batch_size stays the global batch."
        ),
    ),
]
Quick = Annotated[
    bool,
    typer.Option(
        "--quick",
        help=(
            "A run of minutes: 20 steps, ITC retrieval + a 10-step VQA fine-tune, a cached warm start or "
            "none (plumbing check, not results)."
        ),
    ),
]
NoEval = Annotated[
    bool, typer.Option("--no-eval", help="Pre-train only, no downstream evaluation (= --set eval.tasks=[]).")
]
RunLauncher = Annotated[
    Launcher,
    typer.Option(
        "--launcher",
        help=(
            "local: this machine; slurm: one SLURM job of --nodes x --gpus-per-node ranks (CPU nodes: "
            "--nproc ranks each)."
        ),
    ),
]
Nodes = Annotated[int, typer.Option("--nodes", help="Nodes of the SLURM job.", rich_help_panel=SLURM)]
GpusPerNode = Annotated[
    int,
    typer.Option(
        "--gpus-per-node", help="GPUs per node, one rank each (0: --nproc CPU ranks per node).", rich_help_panel=SLURM
    ),
]
CpusPerTask = Annotated[
    int | None,
    typer.Option("--cpus-per-task", help="CPUs per rank (sbatch --cpus-per-task).", rich_help_panel=SLURM),
]
NodeMem = Annotated[str | None, typer.Option("--mem", help="Memory per node, e.g. 64G.", rich_help_panel=SLURM)]
RunTimeLimit = Annotated[
    str | None,
    typer.Option("--time", help="Time limit, e.g. 24:00:00 (default: the partition's).", rich_help_panel=SLURM),
]
RunWait = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait", help="Wait for the SLURM job to end, or return once it is submitted.", rich_help_panel=SLURM
    ),
]

# -------------------------------------------------------------------- eval
EvalTasks = Annotated[
    list[str] | None, typer.Option("--task", help="Task(s) to evaluate (default: the run's eval.tasks).")
]
EvalOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help=(
            "Change an evaluation setting, e.g. --set eval.rerank_k=16 (only eval.*, the device and paths; repeatable)."
        ),
    ),
]

PretrainRun = Annotated[str, typer.Argument(help="MLflow run id of a pre-training run.")]

# ------------------------------------------------------------------- sweep
SweepName = Annotated[str, typer.Argument(help="`list`, a sweep name from experiments/sweeps/, or a sweep YAML path.")]
Slots = Annotated[int | None, typer.Option("--slots", help="Run N trials at once as CPU processes.")]
Gpus = Annotated[
    str | None,
    typer.Option(
        "--gpus", help="One trial per GPU at once, e.g. --gpus 0,1,2,3 (default: all visible GPUs, else 1 CPU slot)."
    ),
]
PerGpu = Annotated[int, typer.Option("--per-gpu", help="Pack K small trials on each GPU.")]
Storage = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help=(
            "Optuna storage: an RDB URL (postgresql://..., mysql://...) shared by hosts, or a journal file "
            "(default: <train.out_dir>/sweeps/optuna-journal.log)."
        ),
    ),
]
Worker = Annotated[
    bool,
    typer.Option(
        "--worker",
        help="Join an existing study (e.g. from another host with the same --storage) and run its queued trials.",
    ),
]
SweepResume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help=(
            "Finish an existing study (running the sweep again does the same, but --resume refuses to start a new one)."
        ),
    ),
]
StudyName = Annotated[str | None, typer.Option("--study-name", help="Optuna study name (default: the sweep's name).")]
Heartbeat = Annotated[
    int,
    typer.Option(
        "--heartbeat",
        help="Seconds between trial heartbeats on RDB storages; a trial silent for 2x is failed and retried.",
    ),
]
LiveProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Live per-slot progress on the terminal.")]
Yes = Annotated[
    bool, typer.Option("--yes", help="Start a sweep of more than 200 trials (its estimated compute is printed).")
]
SweepLauncher = Annotated[
    Launcher,
    typer.Option(
        "--launcher",
        help=(
            "local: trials run on this machine; slurm: in SLURM worker jobs (see README, Running on a SLURM cluster)."
        ),
    ),
]
GpusPerTrial = Annotated[
    int, typer.Option("--gpus-per-trial", help="GPUs of each worker job: 0 (CPU) or 1.", rich_help_panel=SLURM)
]
CpusPerTrial = Annotated[
    int | None,
    typer.Option("--cpus-per-trial", help="CPUs of each worker job (sbatch --cpus-per-task).", rich_help_panel=SLURM),
]
WorkerMem = Annotated[
    str | None, typer.Option("--mem", help="Memory per worker job, e.g. 32G (sbatch --mem).", rich_help_panel=SLURM)
]
WorkerTimeLimit = Annotated[
    str | None,
    typer.Option(
        "--time", help="Time limit per worker job, e.g. 4:00:00 (default: the partition's).", rich_help_panel=SLURM
    ),
]
MaxParallel = Annotated[
    int,
    typer.Option("--max-parallel", help="Worker jobs at once (each runs one trial at a time).", rich_help_panel=SLURM),
]
SweepWait = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Watch the jobs until the sweep ends, or return once they are submitted.",
        rich_help_panel=SLURM,
    ),
]
ShowStatus = Annotated[
    bool, typer.Option("--status", help="Show each trial's state, SLURM job and node, and the queued jobs.")
]
Cancel = Annotated[
    bool,
    typer.Option("--cancel", help="Cancel the sweep's SLURM jobs (their trials are re-queued).", rich_help_panel=SLURM),
]
MaxSeeds = Annotated[
    int | None,
    typer.Option(
        "--max-seeds",
        help="Adaptive seeds (seeds: {min, max} in the spec): the most seeds a comparison may get; replaces max.",
    ),
]

# ------------------------------------------------------------------ report
SweepRefs = Annotated[list[str] | None, typer.Argument(help="Sweep names or parent run ids (default: every sweep).")]
Metrics = Annotated[
    list[str] | None,
    typer.Option(
        "--metric", "-m", help="Metric column, e.g. retrieval/tr_r1 or vqa (repeatable; default: the sweep's)."
    ),
]
Formats = Annotated[
    list[str] | None, typer.Option("--format", "-f", help="md | csv | latex | html (repeatable; default: all).")
]
Figures = Annotated[
    bool,
    typer.Option(
        "--figures/--no-figures", help="Also draw the sweep's figure (heatmap / line / bars) and training curves."
    ),
]

FinishedRun = Annotated[str, typer.Argument(help="MLflow run id of a finished pre-training run.")]
CompareRun = Annotated[str | None, typer.Option("--compare", help="A second run id, drawn side by side.")]
HeldOutImages = Annotated[int, typer.Option("--n", help="Number of held-out images.")]

# -------------------------------------------------------------------- runs
OlderThan = Annotated[float, typer.Option("--older-than", help="Only runs that ended at least this many days ago.")]
Keep = Annotated[
    int,
    typer.Option(
        "--keep",
        help=(
            "Keep the checkpoints of the newest N ended runs of each experiment and config (-e experiment, "
            "sweep variant); runs made by `workbench eval` have none and do not count."
        ),
    ),
]
MlflowExperiments = Annotated[
    list[str] | None, typer.Option("--experiment", "-e", help="Only this MLflow experiment (repeatable).")
]
CheckpointDir = Annotated[Path, typer.Option("--out-dir", help="train.out_dir the runs wrote local checkpoints to.")]

DryRun = Annotated[bool, typer.Option("--dry-run", help="List what would be deleted, delete nothing.")]

# ------------------------------------------------------------------- bench
BenchConfigs = Annotated[
    list[str] | None, typer.Option("--config", "-c", help="base | paper (repeatable; default: both).")
]
BenchQuick = Annotated[bool, typer.Option("--quick", help="Tiny widths, one step per measurement: a smoke test.")]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="Pairs per step (default: the config's; paper on CPU: 2).")
]
Steps = Annotated[int | None, typer.Option("--steps", help="Timed steps per block (default 3).")]
Repeats = Annotated[int | None, typer.Option("--repeats", help="Timed blocks; medians are reported (default 3).")]
LoopSteps = Annotated[
    int | None,
    typer.Option("--loop-steps", help="Steps per block of the data/tracking loop (default train.log_every)."),
]
DataRoot = Annotated[
    str | None,
    typer.Option("--data-root", help="Data set for the base config (default: tiny ShapesWorld in a temp dir)."),
]

AsJson = Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of tables.")]
CompileStep = Annotated[bool, typer.Option("--compile", help="Benchmark with train.compile=true.")]

# --------------------------------------------------------------------- ui
Port = Annotated[int, typer.Option(help="Port to serve on.")]
Host = Annotated[str, typer.Option(help="Address to bind; only this machine by default.")]
OpenBrowser = Annotated[bool, typer.Option("--open", help="Open the runs table in a web browser.")]

# ------------------------------------------------------------------- demo
DemoOut = Annotated[Path, typer.Option("--out", help="Where the report goes.")]
DemoSlots = Annotated[int, typer.Option("--slots", min=1, help="Trials run at once (CPU processes).")]
