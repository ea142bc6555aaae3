"""`workbench report ablations`: per sweep a table in every format, its figures and its page.

Files go to `<out>/<sweep>/`: ablations.{md,csv,tex,html}, the figure that fits the
sweep's shape (heatmap / line / bars .png+.pdf), training_curves.png, and
report.html (the sweep's page) + section.html (its part of `<out>/index.html`).
The sweep's MLflow parent run gets the summary (`parent_summary`): per-variant
mean/std metrics, the table via `mlflow.log_table`, and the files under `reports/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from workbench.reports import figures, history, outputs, parent_summary, sweep_page, tables
from workbench.reports.cells import variant_labels
from workbench.reports.stats import AblationTable, ablation_table
from workbench.reports.store import Sweep, load_sweeps, using_store
from workbench.tracking import resolve_uri

REPORT_ARTIFACT_DIR = parent_summary.REPORT_ARTIFACT_DIR


@dataclass
class SweepReport:
    table: AblationTable
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None
    page: Path | None = None  # <out>/<sweep>/report.html


@dataclass
class ReportResult:
    sweeps: dict[str, SweepReport]
    index: Path
    runs_read: int

    @property
    def files(self) -> list[Path]:
        return [path for report in self.sweeps.values() for path in report.files] + [self.index]


def sweep_figures(sweep: Sweep, table: AblationTable, folder: Path) -> list[Path]:
    """The figure for the sweep's shape, and training curves (when losses were logged)."""
    written = []
    for stem, fig in figures.sweep_figures(sweep, table).items():
        written += outputs.save_figure(fig, folder / stem)
    keys = history.loss_keys(sweep.runs)
    finished_ids = sweep.runs.loc[sweep.runs["status"] == "FINISHED", "run_id"]
    if keys and len(finished_ids):
        stats = figures.curve_stats(history.loss_histories(finished_ids, keys), sweep.runs)
        header, labels = variant_labels(table.variants)
        metric = figures.figure_metrics(sweep, table, limit=1)
        best = sorted(table.ranked(metric[0])[0]) if metric else []
        fig = figures.training_curves_figure(stats, table.variants, f"{table.sweep}: training losses" + (f" ({header})" if header != "variant" else ""), labels,
                                             highlight=[table.baseline, *best])
        if fig is not None:
            written += outputs.save_figure(fig, folder / "training_curves", ("png",))  # for the page, not a paper
    return written


def report_sweep(
    sweep: Sweep,
    out: Path,
    formats: Sequence[str],
    metrics: Sequence[str] = (),
    with_figures: bool = True,
    tracking_uri: str = "",
) -> SweepReport:
    table = ablation_table(sweep, list(metrics))
    folder = out / outputs.safe_name(table.sweep)
    link = sweep_page.run_link(sweep_page.mlflow_base(tracking_uri), sweep.experiment_id)
    render = {**tables.RENDERERS, "html": lambda t: tables.to_html(t, link)}
    files = [outputs.write_text(folder / f"ablations.{tables.FORMATS[fmt]}", render[fmt](table)) for fmt in formats]
    if with_figures:
        files += sweep_figures(sweep, table, folder)
    pages = sweep_page.write_pages(sweep, table, folder, out, files, tracking_uri)
    return SweepReport(table, files + pages[1:], sweep.parent_run_id, pages[1])


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
    uri = resolve_uri(tracking_uri)
    with using_store(tracking_uri):
        for sweep in found:
            report = report_sweep(sweep, out, formats, metrics, with_figures=with_figures, tracking_uri=uri)
            reports[report.table.sweep] = report
            if log_to_mlflow and report.parent_run_id:
                parent_summary.log_summary(report.parent_run_id, report.table, report.files, report.page)
    return ReportResult(reports, outputs.write_index(out), runs_read)
