"""`workbench report ablations`: per sweep a table in every format, its figures and its page.

Files go to `<out>/<sweep>/`: ablations.{md,csv,tex,html}, the figure that fits the
sweep's shape (heatmap / line / bars .png+.pdf), training_curves.png, and
report.html (the sweep's page) + section.html (its part of `<out>/index.html`).
The sweep's MLflow parent run gets the summary (`parent_summary`): per-variant
mean/std metrics, the table via `mlflow.log_table`, and the files under `reports/`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench import report_paths
from workbench.reports import figures, history, outputs, parent_summary, sweep_page, tables
from workbench.reports.cells import variant_labels
from workbench.reports.stats import AblationTable, ablation_table
from workbench.reports.store import Sweep, load_sweeps, using_store
from workbench.tracking import resolve_uri


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


def loss_curves(sweep: Sweep) -> pd.DataFrame | None:
    """Every logged loss point of the sweep's finished runs (read from the store), or None."""
    keys = history.loss_keys(sweep.runs)
    finished_ids = sweep.runs.loc[sweep.runs["status"] == "FINISHED", "run_id"]
    if not keys or not len(finished_ids):
        return None
    return history.loss_histories(finished_ids, keys)


def sweep_figures(sweep: Sweep, table: AblationTable, folder: Path, curves: pd.DataFrame | None) -> list[Path]:
    """The figure for the sweep's shape, and training curves (when losses were logged).
    Drawing only: no store access, so several sweeps can draw in separate processes."""
    written = []
    for stem, fig in figures.sweep_figures(sweep, table).items():
        written += outputs.save_figure(fig, folder / stem)
    if curves is not None:
        stats = figures.curve_stats(curves, sweep.runs)
        header, labels = variant_labels(table.variants)
        metric = figures.figure_metrics(sweep, table, limit=1)
        best = sorted(table.ranked(metric[0])[0]) if metric else []
        fig = figures.training_curves_figure(
            stats,
            table.variants,
            f"{table.sweep}: training losses" + (f" ({header})" if header != "variant" else ""),
            labels,
            highlight=[table.baseline, *best],
        )
        if fig is not None:
            written += outputs.save_figure(fig, folder / "training_curves", ("png",))  # for the page, not a paper
    return written


_JOBS: list[tuple] = []  # (sweep, table, folder, curves) for forked drawing workers


def _draw(index: int) -> list[Path]:
    return sweep_figures(*_JOBS[index])


def draw_all(jobs: list[tuple]) -> list[list[Path]]:
    """Each sweep's figures; several sweeps draw in parallel (matplotlib is most of a report's
    time). Workers are forked, so they inherit the drawn data instead of unpickling it, and
    never touch the tracking store (the parent read it)."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [sweep_figures(*job) for job in jobs]
    _JOBS[:] = jobs
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_draw, range(len(jobs))))
    finally:
        _JOBS.clear()


def report_ablations(
    sweeps: Sequence[str] = (),
    *,
    metrics: Sequence[str] = (),
    formats: Sequence[str] = tuple(tables.FORMATS),
    out: Path | str = report_paths.OUT_DIR,
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
        made = []  # (sweep, table, folder, table files)
        for sweep in found:
            table = ablation_table(sweep, list(metrics))
            folder = out / outputs.safe_name(table.sweep)
            link = sweep_page.run_link(sweep_page.mlflow_base(uri), sweep.experiment_id)
            render = {**tables.RENDERERS, "html": lambda t, link=link: tables.to_html(t, link)}
            files = [
                outputs.write_text(folder / f"ablations.{tables.FORMATS[fmt]}", render[fmt](table)) for fmt in formats
            ]
            made.append((sweep, table, folder, files))
        drawn = (
            draw_all([(sweep, table, folder, loss_curves(sweep)) for sweep, table, folder, _ in made])
            if with_figures
            else [[] for _ in made]
        )
        for (sweep, table, folder, files), figure_files in zip(made, drawn, strict=True):
            pages = sweep_page.write_pages(sweep, table, folder, out, files + figure_files, uri)
            report = SweepReport(table, files + figure_files + pages[1:], sweep.parent_run_id, pages[1])
            reports[report.table.sweep] = report
            if log_to_mlflow and report.parent_run_id:
                parent_summary.log_summary(report.parent_run_id, report.table, report.files, report.page)
    return ReportResult(reports, outputs.write_index(out), runs_read)
