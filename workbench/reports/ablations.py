"""`workbench report ablations`: per sweep a table in every format plus its figures.

Files go to `<out>/<sweep>/` (ablations.{md,csv,tex,html}, training_curves.{png,pdf},
mask_ratio.{png,pdf}) and are logged as artifacts (never metrics) under
`reports/` of the sweep's parent run; `<out>/index.html` links everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import mlflow

from workbench.reports import figures, history, outputs, tables
from workbench.reports.stats import AblationTable, ablation_table
from workbench.reports.store import Sweep, load_sweeps, using_store

REPORT_ARTIFACT_DIR = "reports"


@dataclass
class SweepReport:
    table: AblationTable
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None


@dataclass
class ReportResult:
    sweeps: dict[str, SweepReport]
    index: Path
    runs_read: int

    @property
    def files(self) -> list[Path]:
        return [path for report in self.sweeps.values() for path in report.files] + [self.index]


def sweep_figures(sweep: Sweep, table: AblationTable, folder: Path) -> list[Path]:
    """Training curves (always, when losses were logged) and the mask-ratio figure (when a ratio varies)."""
    written = []
    keys = history.loss_keys(sweep.runs)
    finished_ids = sweep.runs.loc[sweep.runs["status"] == "FINISHED", "run_id"]
    if keys and len(finished_ids):
        stats = figures.curve_stats(history.loss_histories(finished_ids, keys), sweep.runs)
        fig = figures.training_curves_figure(stats, table.variants, f"{table.sweep}: training losses")
        if fig is not None:
            written += outputs.save_figure(fig, folder / "training_curves")
    fig = figures.mask_ratio_figure(sweep.runs, table.metrics, f"{table.sweep}: downstream metrics vs SCL mask ratios")
    if fig is not None:
        written += outputs.save_figure(fig, folder / "mask_ratio")
    return written


def report_sweep(sweep: Sweep, out: Path, formats: Sequence[str], metrics: Sequence[str] = (), with_figures: bool = True) -> SweepReport:
    table = ablation_table(sweep, list(metrics))
    folder = out / outputs.safe_name(table.sweep)
    files = [
        outputs.write_text(folder / f"ablations.{tables.FORMATS[fmt]}", tables.RENDERERS[fmt](table))
        for fmt in formats
    ]
    if with_figures:
        files += sweep_figures(sweep, table, folder)
    return SweepReport(table, files, sweep.parent_run_id)


def report_ablations(
    sweeps: Sequence[str] = (),
    *,
    metrics: Sequence[str] = (),
    formats: Sequence[str] = tuple(tables.FORMATS),
    out: Path | str = Path("reports"),
    tracking_uri: str = "",
    with_figures: bool = True,
    log_to_mlflow: bool = True,
) -> ReportResult:
    """Tables (and figures) for the named sweeps (names or parent run ids; all when empty)."""
    formats = tables.check_formats(list(formats))
    out = Path(out)
    found, runs_read = load_sweeps(sweeps, tracking_uri)
    reports: dict[str, SweepReport] = {}
    with using_store(tracking_uri):
        for sweep in found:
            report = report_sweep(sweep, out, formats, metrics, with_figures=with_figures)
            reports[report.table.sweep] = report
            if log_to_mlflow and report.parent_run_id:
                client = mlflow.MlflowClient()
                for path in report.files:
                    client.log_artifact(report.parent_run_id, str(path), REPORT_ARTIFACT_DIR)
    return ReportResult(reports, outputs.write_index(out), runs_read)
