"""The `workbench` command line. Thin: parse options, call a plain function, print.

Every command body is a call into a layer below (data, train, sweeps, reports,
tracking); errors from those layers become one line and an exit code here.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from workbench import errors

app = typer.Typer(
    help="Ablation workbench for vision-language pre-training: run, sweep, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate and check data sets.", no_args_is_help=True)
config_app = typer.Typer(help="Show resolved run configs.", no_args_is_help=True)
sweep_app = typer.Typer(help="Named ablation sweeps through Optuna.", no_args_is_help=True)
report_app = typer.Typer(help="Ablation tables and attention figures from MLflow.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(report_app, name="report")

_debug = False

Experiment = Annotated[
    str, typer.Option("--experiment", "-e", help="Experiment name under experiments/ or a YAML path.")
]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key, e.g. --set objectives.scl.mvsc=false (repeatable)."),
]
TrackingUri = Annotated[
    Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
]


def friendly(fn: Callable) -> Callable:
    """Turn our errors into one line + exit code (2 = bad input, 1 = runtime)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (errors.USER_ERRORS + errors.RUNTIME_ERRORS) as err:
            if _debug:
                raise
            typer.echo(errors.one_line(err), err=True)
            raise typer.Exit(errors.exit_code(err)) from None

    return wrapper


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    global _debug
    _debug = debug


def _overrides(overrides: Optional[list[str]], device: Optional[str] = None, tracking_uri: Optional[str] = None) -> list[str]:
    out = list(overrides or [])
    if device:
        out.append(f"train.device={device}")
    if tracking_uri:
        out.append(f"tracking.uri={tracking_uri}")
    return out


# ------------------------------------------------------------------ config
@config_app.command("show")
@friendly
def config_show(experiment: Experiment = "base", overrides: Overrides = None) -> None:
    """Print the resolved config (defaults <- experiment YAML <- --set) as YAML."""
    from workbench.config import load_config, to_yaml

    typer.echo(to_yaml(load_config(experiment, _overrides(overrides))), nl=False)


@config_app.command("keys")
def config_keys() -> None:
    """List every config key that --set accepts."""
    from workbench.config import all_keys

    typer.echo("\n".join(all_keys()))


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

    manifest = generate(out, seed=seed, size=size)
    counts = ", ".join(f"{k}={v}" for k, v in manifest["counts"].items())
    typer.echo(f"ShapesWorld written to {out} ({counts})")


@data_app.command("check")
@friendly
def data_check(experiment: Experiment = "base", overrides: Overrides = None) -> None:
    """Validate a data set before a long run: counts, missing files, unreadable images."""
    raise errors.NotBuiltYet("`workbench data check` is not built yet (issue: real data)")


# --------------------------------------------------------------------- run
@app.command()
@friendly
def run(
    experiment: Experiment = "base",
    overrides: Overrides = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    tracking_uri: TrackingUri = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="MLflow run id to continue from its last checkpoint.")] = None,
) -> None:
    """Pre-train one configured model, evaluate it downstream, log all to MLflow."""
    from workbench.config import load_config
    from workbench import train

    cfg = load_config(experiment, _overrides(overrides, device, tracking_uri))
    result = train.run(cfg, resume_run_id=resume)
    typer.echo(result.summary())


@app.command("eval")
@friendly
def evaluate(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a pre-training run.")],
    task: Annotated[Optional[list[str]], typer.Option("--task", help="Task(s) to evaluate (default: the run's eval.tasks).")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Evaluate a pre-trained checkpoint on downstream tasks; logs into the same run."""
    from workbench import train

    metrics = train.evaluate_run(run_id, tasks=task, tracking_uri=tracking_uri)
    for name, value in sorted(metrics.items()):
        typer.echo(f"{name}\t{value:.4f}")


# ------------------------------------------------------------------- sweep
@app.command()
@friendly
def sweep(name: Annotated[str, typer.Argument(help="A sweep name (see `workbench sweep list`) or a YAML path.")] = "list") -> None:
    """Run a named ablation sweep through Optuna (not built yet)."""
    raise errors.NotBuiltYet("`workbench sweep` is not built yet (issue: sweeps)")


# ------------------------------------------------------------------ report
@report_app.command("ablations")
@friendly
def report_ablations() -> None:
    """Ablation tables (mean ± std over seeds, Δ vs baseline, paired test)."""
    raise errors.NotBuiltYet("`workbench report ablations` is not built yet (issue: reports)")


@report_app.command("attention")
@friendly
def report_attention() -> None:
    """Cross-attention and Grad-CAM maps for held-out images."""
    raise errors.NotBuiltYet("`workbench report attention` is not built yet (issue: reports)")


# ---------------------------------------------------------------------- ui
@app.command()
@friendly
def ui() -> None:
    """Start the MLflow UI on the project's tracking store (not built yet)."""
    raise errors.NotBuiltYet("`workbench ui` is not built yet (issue: reports)")


# -------------------------------------------------------------------- demo
@app.command()
@friendly
def demo() -> None:
    """The main job on the embedded data: generate ShapesWorld, show the config."""
    from workbench.config import load_config, to_yaml
    from workbench.data.shapes import generate

    cfg = load_config("base")
    manifest = generate(Path(cfg.data.root), seed=cfg.data.shapes_seed, size=cfg.data.shapes_size)
    typer.echo(f"ShapesWorld ready in {cfg.data.root}: {manifest['counts']}")
    typer.echo(to_yaml(cfg), nl=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
