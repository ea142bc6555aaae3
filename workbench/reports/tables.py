"""Render an AblationTable as markdown, CSV, LaTeX or HTML — one column per metric.

CSV is the numbers (one column per metric and statistic, the reference row first)
for other tools. Markdown, HTML and LaTeX share one shape (`cells.grid`): a
reference row, then per variant `mean ± std` with the Δ vs baseline, † / ‡ after
Holm's correction, ° / § for cells not above the reference or constant, bold best,
underlined (markdown: italic) second, and the device-hours the row cost. Markdown
and HTML add a details table: Δ with its 95 % CI, Holm p, and for a non-significant
Δ the seeds a test would need. `latex.py` writes the LaTeX.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import pandas as pd

from workbench.errors import ConfigError
from workbench.reports import latex
from workbench.reports.cells import (  # noqa: F401 - metric_label/decimals are part of this module's API
    BELOW_REF,
    CONSTANT,
    Cell,
    Grid,
    decimals,
    grid,
    improvement_lines,
    legend,
    metric_label,
)
from workbench.reports.stats import STATS, AblationTable

FORMATS = {"md": "md", "csv": "csv", "latex": "tex", "html": "html"}  # format -> file suffix
REFERENCE_LABEL = "reference"


def check_formats(formats: list[str]) -> list[str]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def caption(table: AblationTable) -> str:
    return legend(grid(table))


def row_label(g: Grid, variant: str) -> str:
    label = g.labels[variant]
    return label if variant != g.table.baseline or label == "baseline" else f"{label} (baseline)"


# --------------------------------------------------------------------- csv
def to_csv(table: AblationTable) -> str:
    """Numbers only: variant, is_baseline, flag, device_hours, then `<metric>.<stat>`; a first
    row `reference` holds each metric's reference level in `.mean` and its kind in `.reference`."""
    columns: dict[str, list] = {
        "is_baseline": [False] + [v == table.baseline for v in table.variants],
        "flag": [""] + [table.flags.get(v, "") for v in table.variants],
        "device_hours": [math.nan] + [table.device_hours.get(v, math.nan) for v in table.variants],
    }
    for metric in table.metrics:
        ref = table.references.get(metric)
        columns[f"{metric}.reference"] = [ref.kind if ref else ""] + [""] * len(table.variants)
        for stat in STATS:
            values = table.stats[(metric, stat)].tolist()
            first = ref.mean if (ref and stat == "mean") else math.nan
            columns[f"{metric}.{stat}"] = [first] + values
    index = pd.Index([REFERENCE_LABEL] + table.variants, name="variant")
    return pd.DataFrame(columns, index=index).to_csv()


# ---------------------------------------------------------------- markdown
def md_cell(cell: Cell) -> str:
    if cell.n == 0:
        return "—"
    value = f"{cell.mean} ± {cell.std}" if cell.std else cell.mean
    value = f"**{value}**" if cell.rank == 1 else f"_{value}_" if cell.rank == 2 else value
    delta = f" ({cell.delta})" if cell.delta else ""
    short = f" n={cell.n}" if cell.short else ""
    return f"{value}{delta}{cell.mark}{cell.flags}{short}"


def _pipe(rows: list[list[str]], align: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = ["-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1) for a, w in zip(align, widths, strict=True)]
    pad = lambda r: [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align, strict=True)]  # noqa: E731
    return ["| " + " | ".join(pad(rows[0])) + " |", "|" + "|".join(rule) + "|"] + [
        "| " + " | ".join(pad(r)) + " |" for r in rows[1:]
    ]


def verdict_header(g: Grid) -> list[str]:
    """The verdict columns (none when the table has no verdicts): verdict, seeds, CI of Δ."""
    return [f"verdict ({metric_label(g.table.verdict_metric)})", "seeds", "CI of Δ"] if g.verdicts else []


def verdict_row(g: Grid, variant: str) -> list[str]:
    if not g.verdicts:
        return []
    cell = g.verdicts[variant]
    return [cell.text, cell.seeds, cell.ci or "—"]


def markdown_rows(g: Grid) -> tuple[list[list[str]], list[str]]:
    table = g.table
    flagged = any(table.flags.get(v) for v in table.variants)
    verdicts = verdict_header(g)
    header = [g.header, *g.metric_labels.values(), *verdicts, g.cost_unit] + (["flag"] if flagged else [])
    rows = [header]
    if g.has_reference:
        refs = [f"{r.value} ({r.kind})" if r.kind else "—" for r in g.references.values()]
        rows.append([f"_{REFERENCE_LABEL}_", *refs, *[""] * len(verdicts), ""] + ([""] if flagged else []))
    for variant in table.variants:
        cells = [md_cell(g.cells[variant][m]) for m in table.metrics]
        rows.append(
            [row_label(g, variant), *cells, *verdict_row(g, variant), g.cost[variant]]
            + ([table.flags.get(variant, "")] if flagged else [])
        )
    align = ["l"] + ["r"] * len(table.metrics) + ["l", "r", "r"][: len(verdicts)] + ["r"] + (["l"] if flagged else [])
    return rows, align


def details_rows(g: Grid) -> list[list[str]]:
    """Long form, one line per variant x metric: Δ, its 95 % CI, Holm p, seeds for 80 % power."""
    rows = [[g.header, "metric", "Δ", "95% CI", "p (Holm)", "seeds for 80% power"]]
    for variant in g.table.variants:
        if variant == g.table.baseline:
            continue
        for metric in g.table.metrics:
            cell = g.cells[variant][metric]
            p = cell.p or "no test (< 2 paired seeds or no spread)"
            rows.append(
                [
                    g.labels[variant],
                    g.metric_labels[metric],
                    cell.delta or "—",
                    cell.ci or "—",
                    p,
                    cell.seeds_needed or ("—" if cell.p else ""),
                ]
            )
    return rows


def to_markdown(table: AblationTable, details: bool = True) -> str:
    """The table (readable as plain text: aligned columns) and, with `details`, the Δ statistics."""
    g = grid(table)
    rows, align = markdown_rows(g)
    text = legend(g).replace("underlined", "italic")
    parts = [f"## {table.sweep}", "", text, "", *_pipe(rows, align)]
    aggregate = improvement_lines(table)
    if aggregate:
        parts += ["", aggregate[0], "", *[f"* {line}" for line in aggregate[1:]]]
    if details and len(table.variants) > 1 and table.metrics:
        parts += [
            "",
            "Δ vs baseline: 95% CI (t-based, paired seeds), Holm-adjusted p, and for a "
            "non-significant Δ the paired seeds a two-sided test at α = 0.05 needs for 80% power "
            "(from the observed spread).",
            "",
            *_pipe(details_rows(g), ["l", "l", "r", "r", "r", "r"]),
        ]
    parts += [f"> note: {note}" for note in table.notes]
    return "\n".join(parts) + "\n"


# -------------------------------------------------------------------- html
TABLE_CSS = """
table.ablation { border-collapse: collapse; font: 13px/1.35 system-ui, sans-serif; margin: 0.5em 0 1em; }
p.legend { color: #555; font-size: 12px; max-width: 72em; margin: 0 0 0.8em; }
table.ablation th, table.ablation td { padding: 4px 10px; white-space: nowrap; text-align: right; }
table.ablation th:first-child, table.ablation td:first-child { text-align: left; }
table.ablation thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
table.ablation tbody tr:last-child td { border-bottom: 2px solid #222; }
table.ablation tr.reference td { background: #f1f1f1; color: #555; font-style: italic; border-bottom: 1px solid #999; }
table.ablation tr.baseline td { border-bottom: 1px solid #ddd; }
table.ablation td.up { background: #d9f2d9; }
table.ablation td.down { background: #f9dcdc; }
table.ablation td.low { color: #999; }
table.ablation .delta { color: #555; font-size: 0.85em; }
table.ablation .best { font-weight: 700; }
table.ablation .second { text-decoration: underline; }
table.ablation .runs a { color: #36c; margin-left: 4px; font-size: 0.85em; }
table.ablation td.flag { color: #b00; text-align: left; }
table.details { font-size: 12px; }
table.ablation td.verdict { text-align: left; font-weight: 600; }
table.ablation td.verdict.better { color: #1a7f37; } table.ablation td.verdict.worse { color: #b00; }
table.ablation td.verdict.unresolved, table.ablation td.verdict.open { color: #777; font-weight: 400; }
"""


def html_cell(cell: Cell, title: str) -> str:
    if cell.n == 0:
        return "<td>—</td>"
    classes = ["up" if cell.direction > 0 else "down" if cell.direction < 0 else "", "low" if cell.flags else ""]
    rank = " class='best'" if cell.rank == 1 else " class='second'" if cell.rank == 2 else ""
    std = f" ± {cell.std}" if cell.std else ""
    delta = f" <span class='delta'>({html.escape(cell.delta)})</span>" if cell.delta else ""
    short = f" <small>n={cell.n}</small>" if cell.short else ""
    cls = " ".join(c for c in classes if c)
    return (
        f"<td{f' class={chr(39)}{cls}{chr(39)}' if cls else ''} title='{html.escape(title, quote=True)}'>"
        f"<span{rank}>{cell.mean}{std}</span>{delta}{cell.mark}{cell.flags}{short}</td>"
    )


def _tooltip(g: Grid, variant: str, metric: str) -> str:
    cell = g.cells[variant][metric]
    if variant == g.table.baseline:
        return f"baseline, n={cell.n}"
    parts = [f"Δ {cell.delta or '—'} {cell.ci}".strip(), f"p (Holm) {cell.p or 'no test'}", f"n={cell.n}"]
    if cell.seeds_needed:
        parts.append(f"{cell.seeds_needed} paired seeds for 80% power")
    return "; ".join(parts)


def html_table(table: AblationTable, run_link: Callable[[str], str] | None = None) -> str:
    """The ablation table as an HTML fragment (styles in TABLE_CSS); `run_link(run_id)` -> URL adds
    a link per seed to that run's MLflow page."""
    g = grid(table)
    flagged = any(table.flags.get(v) for v in table.variants)
    verdicts = verdict_header(g)
    head = (
        [g.header, *g.metric_labels.values(), *verdicts, g.cost_unit]
        + (["runs"] if run_link else [])
        + (["flag"] if flagged else [])
    )
    out = [
        "<table class='ablation'><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
    ]
    extra = (1 if run_link else 0) + (1 if flagged else 0)
    if g.has_reference:
        refs = "".join(
            f"<td>{html.escape(r.value)} <small>({r.kind})</small></td>" if r.kind else "<td>—</td>"
            for r in g.references.values()
        )
        out.append(
            f"<tr class='reference'><td>{REFERENCE_LABEL}</td>{refs}"
            f"{'<td></td>' * len(verdicts)}<td></td>{'<td></td>' * extra}</tr>"
        )
    out += [_html_row(table, g, variant, run_link, flagged) for variant in table.variants]
    out.append("</tbody></table>")
    return "".join(out + _html_below(table, g)) + "".join(
        f"<p class='note'>note: {html.escape(note)}</p>" for note in table.notes
    )


def _html_row(table: AblationTable, g: Grid, variant: str, run_link: Callable[[str], str] | None, flagged: bool) -> str:
    """One variant's row: label, cells, verdict, cost, links to its seeds' runs, flag."""
    cls = " class='baseline'" if variant == table.baseline else ""
    cells = "".join(html_cell(g.cells[variant][m], _tooltip(g, variant, m)) for m in table.metrics)
    said = "".join(
        f"<td class='verdict {html.escape(g.verdicts[variant].verdict)}'>{html.escape(c)}</td>"
        if i == 0
        else f"<td>{html.escape(c)}</td>"
        for i, c in enumerate(verdict_row(g, variant))
    )
    row = f"<tr{cls}><td>{html.escape(row_label(g, variant))}</td>{cells}{said}<td>{g.cost[variant]}</td>"
    if run_link:
        seeds = table.run_ids.get(variant, {})
        links = "".join(
            f"<a href='{html.escape(run_link(run), quote=True)}'>s{seed}</a>" for seed, run in seeds.items()
        )
        row += f"<td class='runs'>{links}</td>"
    if flagged:
        row += f"<td class='flag'>{html.escape(table.flags.get(variant, ''))}</td>"
    return row + "</tr>"


def _html_below(table: AblationTable, g: Grid) -> list[str]:
    """What follows the table: the legend, the aggregate improvement, the details table."""
    out = [f"<p class='legend'>{html.escape(legend(g))}</p>"]
    aggregate = improvement_lines(table)
    if aggregate:
        out.append(
            f"<p class='legend'>{html.escape(aggregate[0])}</p><ul class='legend'>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in aggregate[1:])
            + "</ul>"
        )
    details = details_rows(g)
    if len(details) > 1:
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in details[1:])
        out.append(
            "<details><summary>Δ vs baseline: 95% CI, Holm p, seeds for 80% power</summary>"
            "<table class='ablation details'><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in details[0])
            + f"</tr></thead><tbody>{body}</tbody></table></details>"
        )
    return out


def to_html(table: AblationTable, run_link: Callable[[str], str] | None = None) -> str:
    name = html.escape(table.sweep)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{name}</title><style>{TABLE_CSS}</style></head>"
        f"<body>\n<h2>{name}</h2>\n{html_table(table, run_link)}\n</body></html>\n"
    )


RENDERERS: dict[str, Callable[[AblationTable], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "latex": latex.to_latex,
    "html": to_html,
}
to_latex = latex.to_latex
