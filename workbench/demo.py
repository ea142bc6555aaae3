"""`make demo`: the whole workflow once, on the embedded data, in minutes on a laptop CPU.

ShapesWorld -> an ablation sweep (SCL off vs on, 3 seeds, each run pre-trains and
is evaluated on retrieval, VQA, NLVR and VE) -> the ablation table and figures
-> attention maps of SCL off vs on. Every step is the same function the CLI
commands call; nothing here is special to the demo but the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from workbench import report_paths, tracking
from workbench.config import load_config
from workbench.errors import RunError, check_writable

SWEEP = "demo"


@dataclass
class DemoResult:
    table: str
    files: list[Path]
    tracking_uri: str


def _seed0_run(experiment: str, variant: str, uri: str) -> str | None:
    runs = tracking.client(uri).search_runs(
        [tracking.experiment_id(experiment, uri)],
        filter_string=(
            f"tags.`workbench.sweep` = '{SWEEP}' and tags.`workbench.variant` = '{variant}' "
            "and tags.`workbench.seed` = '0' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _warm_start(cfg) -> dict:
    """The uni-modal warm start the sweep's runs start from (`model.*.init`), made once here with
    a progress bar rather than inside the first sweep trial."""
    from workbench.data import load_tokenizer
    from workbench.warmstart import ensure

    return ensure(cfg, load_tokenizer(cfg.data), progress=True, announce=lambda text: typer.echo(f"      {text}"))


def run_demo(out: Path = report_paths.OUT_DIR, slots: int = 2, tracking_uri: str = "") -> DemoResult:
    from workbench import sweeps
    from workbench.data import ensure_data
    from workbench.reports.ablations import report_ablations
    from workbench.reports.attention_figure import report_attention
    from workbench.reports.tables import to_markdown

    check_writable(
        Path(out), "--out"
    )  # before the data and the sweep: a report that cannot be written ends nothing late
    spec = sweeps.load_spec(SWEEP)
    cfg = load_config(spec.base)
    uri = tracking.resolve_uri(tracking_uri or cfg.tracking.uri)
    typer.echo(f"[1/4] ShapesWorld ({cfg.data.shapes_size}) in {cfg.data.root}")
    manifest = ensure_data(cfg.data)
    typer.echo(f"      {manifest['counts']}")
    made = _warm_start(cfg)
    if made:
        typer.echo("      uni-modal warm start: " + ", ".join(f"{part} {path}" for part, path in made.items()))

    typer.echo(f"[2/4] sweep '{SWEEP}': {spec.description}")
    result = sweeps.run_sweep(spec, sweeps.SweepOptions(slots=slots, tracking_uri=uri, resume=False))
    typer.echo(result.summary())
    problem = result.problem()
    if problem is not None:
        raise problem

    typer.echo("[3/4] ablation report")
    report = report_ablations([SWEEP], out=out, tracking_uri=uri)
    table = "\n\n".join(to_markdown(r.table, details=False) for r in report.sweeps.values())
    files = list(report.files)

    typer.echo("[4/4] attention maps: SCL off vs on (seed 0)")
    baseline, variant = (
        _seed0_run(cfg.tracking.experiment, spec.baseline, uri),
        _seed0_run(cfg.tracking.experiment, "+scl", uri),
    )
    if baseline is None or variant is None:
        raise RunError("demo: the sweep finished without a seed-0 run of both variants")
    files += report_attention(baseline, variant, n=4, out=out, tracking_uri=uri).files
    return DemoResult(table, files, uri)
