"""A sweep's section of the report page: what was run (description, budget, seeds, date,
cost), the table itself with each seed linked to its MLflow run page, and the figures inline.

The same section is the sweep's own page (`<sweep>/report.html`, logged to the parent
run) and a part of `<out>/index.html`; only the relative paths differ.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from workbench.reports import outputs
from workbench.reports.cells import hours
from workbench.reports.stats import AblationTable
from workbench.reports.store import FINISHED, Sweep
from workbench.reports.tables import TABLE_CSS, html_table
from workbench.reports.ui import ui_url

FIGURE_CAPTIONS = {
    "heatmap": "objective over the 2-D grid (mean over seeds; † / ‡ vs baseline after Holm)",
    "line": "metrics along the swept axis (mean ± std, dots = seeds, dashed = reference)",
    "bars": "metrics per variant (bars = mean, dots = seeds, dashed = reference)",
    "training_curves": "training losses (mean ± std over seeds)",
}


def mlflow_base(tracking_uri: str) -> str:
    """Where a reader opens runs: the tracking server itself, else `workbench ui` on this machine."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui_url()


def run_link(base: str, experiment_id: str | None) -> Callable[[str], str]:
    def link(run_id: str) -> str:
        return f"{base}/#/experiments/{quote(str(experiment_id or '0'))}/runs/{quote(run_id)}"

    return link


def _values(runs: pd.DataFrame, param: str) -> str:
    column = f"params.{param}"
    if column not in runs:
        return ""
    values = sorted(set(runs[column].dropna().astype(str)))
    return values[0] if len(values) == 1 else f"{values[0]}…{values[-1]}" if values else ""


def budget(runs: pd.DataFrame) -> str:
    """'300 steps × batch 32 · data data/shapesworld (default)' from the runs' params."""
    steps, batch = _values(runs, "train.steps"), _values(runs, "train.batch_size")
    root, size = _values(runs, "data.root"), _values(runs, "data.shapes_size")
    parts = []
    if steps:
        parts.append(f"{steps} steps" + (f" × batch {batch}" if batch else ""))
    if root:
        parts.append(f"data {root}" + (f" ({size})" if size and "shapes" in root else ""))
    return " · ".join(parts) or "not recorded"


def when(sweep: Sweep) -> str:
    started = (
        sweep.started if sweep.started is not None else (sweep.runs["start_time"].min() if len(sweep.runs) else None)
    )
    if started is None or pd.isna(started):
        return "unknown"
    return (
        pd.Timestamp(started).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
        if pd.Timestamp(started).tzinfo
        else pd.Timestamp(started).strftime("%Y-%m-%d %H:%M")
    )


def section(sweep: Sweep, table: AblationTable, files: list[Path], prefix: str, tracking_uri: str) -> str:
    """The HTML section; `prefix` is prepended to file names (the sweep folder, or '' on its own page)."""
    base = mlflow_base(tracking_uri)
    link = run_link(base, sweep.experiment_id)
    runs = sweep.runs
    finished = int((runs["status"] == FINISHED).sum()) if len(runs) else 0
    planned = len(table.variants) * len(table.expected_seeds)
    total_cost = sum(v for v in table.device_hours.values() if not math.isnan(v))
    parent = (
        (
            f" · MLflow parent run <a href='{html.escape(link(sweep.parent_run_id), quote=True)}'>"
            f"{html.escape(sweep.parent_run_id[:8])}</a>"
        )
        if sweep.parent_run_id
        else ""
    )
    meta = [
        f"<b>{html.escape(sweep.spec.description)}</b>" if sweep.spec.description else "",
        f"budget: {html.escape(budget(runs))} · seeds: "
        f"{html.escape(', '.join(map(str, table.expected_seeds)) or 'none')} "
        f"· {len(table.variants)} variants · {finished}/{planned or '?'} runs finished "
        f"· {hours(total_cost)} {table.device_kind}-h · started {html.escape(when(sweep))}{parent}",
    ]
    rel = lambda p: f"{prefix}{p.name}"  # noqa: E731
    tables = [p for p in files if p.suffix in outputs.TABLE_SUFFIXES]
    figures = [p for p in files if p.suffix == ".png"]
    parts = [
        f"<section class='sweep' id='{html.escape(outputs.safe_name(table.sweep), quote=True)}'>",
        f"<h2>sweep {html.escape(table.sweep)}</h2>",
    ]
    parts += [f"<p class='meta'>{m}</p>" for m in meta if m]
    parts.append(html_table(table, link))
    if tables:
        parts.append(
            "<p class='files'>tables: "
            + "".join(f"<a href='{html.escape(rel(p), quote=True)}'>{html.escape(p.name)}</a>" for p in tables)
            + "</p>"
        )
    for image in figures:
        pdf = image.with_suffix(".pdf")
        caption = f"{table.sweep}: {FIGURE_CAPTIONS.get(image.stem, image.stem.replace('_', ' '))}"
        parts.append(outputs.figure_html(rel(image), caption, rel(pdf) if pdf in files else None))
    parts.append("</section>")  # no time of writing: the same runs give the same bytes
    return "\n".join(parts)


def write_pages(
    sweep: Sweep, table: AblationTable, folder: Path, root: Path, files: list[Path], tracking_uri: str
) -> list[Path]:
    """`<folder>/section.html` (for the index) and `<folder>/report.html` (the sweep's own page)."""
    prefix = folder.relative_to(root).as_posix() + "/"
    fragment = outputs.write_text(folder / outputs.SECTION, section(sweep, table, files, prefix, tracking_uri))
    own = outputs.page(f"sweep {table.sweep}", section(sweep, table, files, "", tracking_uri), TABLE_CSS)
    return [fragment, outputs.write_text(folder / outputs.SWEEP_PAGE, own)]
