"""Render an AblationTable as markdown, CSV, LaTeX or HTML.

CSV is the numbers (one column per metric and statistic) for other tools;
markdown, LaTeX and HTML show `mean ± std (n=k)`, Δ and p per metric, the best
mean per column in bold and a flag column naming seeds that were left out.
LaTeX and HTML go through pandas' Styler. `tabulate` is not installed, so the
markdown pipe table is written here (it is a few lines).
"""

from __future__ import annotations

import functools
import html
import math
from typing import Callable

import pandas as pd

from workbench.config import ConfigError
from workbench.reports.stats import STATS, TEST_NAME, AblationTable

FORMATS = {"md": "md", "csv": "csv", "latex": "tex", "html": "html"}  # format -> file suffix
TASK_LABELS = {
    "retrieval": "",
    "retrieval_itc": "ITC",
    "video_retrieval": "video",
    "vqa": "VQA",
    "nlvr": "NLVR2",
    "ve": "VE",
    "attention": "attention",
}
METRIC_LABELS = {
    "tr_r1": "TR@1", "tr_r5": "TR@5", "tr_r10": "TR@10",
    "ir_r1": "IR@1", "ir_r5": "IR@5", "ir_r10": "IR@10",
    "r_mean": "R mean", "acc": "acc", "in_object": "in-object",
}
DASH = "—"
MAX_DIGITS = 4


def metric_label(key: str) -> str:
    """'eval/retrieval/tr_r1' -> 'TR@1', 'eval/video_retrieval/ir_r1' -> 'video IR@1', 'eval/vqa/acc' -> 'VQA acc'."""
    parts = key.split("/")
    if parts[0] == "eval":
        parts = parts[1:]
    if len(parts) == 2:
        task, metric = parts
        return f"{TASK_LABELS.get(task, task)} {METRIC_LABELS.get(metric, metric)}".strip()
    return "/".join(parts)


def check_formats(formats: list[str]) -> list[str]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def decimals(means: list[float], minimum: int) -> int:
    """Decimals for a column: `minimum` for values >= 1, more for fractions (0.0514, not 0.05)."""
    top = max((abs(m) for m in means if not math.isnan(m)), default=0.0)
    if top == 0.0:
        return minimum
    return min(MAX_DIGITS, max(minimum, minimum - math.floor(math.log10(top))))


def _signed(value: float, digits: int) -> str:
    return DASH if math.isnan(value) else f"{value:+.{digits}f}"


def _p_value(value: float) -> str:
    if value is None or math.isnan(value):
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _cell(mean: float, std: float, n: int, digits: int) -> str:
    if n == 0 or math.isnan(mean):
        return f"{DASH} (n=0)"
    spread = "" if math.isnan(std) else f" ± {std:.{digits}f}"
    return f"{mean:.{digits}f}{spread} (n={int(n)})"


@functools.lru_cache(maxsize=8)  # md, latex and html of one table share it
def display_frame(table: AblationTable, digits: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text cells for the human formats, and a same-shaped boolean frame: which cells are bold."""
    text, bold = {}, {}
    is_base = [v == table.baseline for v in table.variants]
    for metric in table.metrics:
        label = metric_label(metric)
        best = table.best(metric)
        s = {stat: table.stats[(metric, stat)].tolist() for stat in STATS}
        shown = decimals(s["mean"], digits)
        text[label] = [_cell(*cell, shown) for cell in zip(s["mean"], s["std"], s["n"])]
        text[f"{label} Δ"] = [DASH if base else _signed(d, shown) for base, d in zip(is_base, s["delta"])]
        text[f"{label} p"] = [DASH if base else _p_value(p) for base, p in zip(is_base, s["p_value"])]
        bold[label] = [v in best for v in table.variants]
        bold[f"{label} Δ"] = [False] * len(table.variants)
        bold[f"{label} p"] = [False] * len(table.variants)
    text["flag"] = [table.flags.get(v, "") for v in table.variants]
    bold["flag"] = [False] * len(table.variants)
    index = pd.Index([f"{v} (baseline)" if v == table.baseline else v for v in table.variants], name="variant")
    return pd.DataFrame(text, index=index), pd.DataFrame(bold, index=index)


def caption(table: AblationTable) -> str:
    seeds = ", ".join(map(str, table.expected_seeds)) or "none recorded"
    return (
        f"Sweep {table.sweep}: mean ± std over seeds (n = finished seeds; expected seeds: {seeds}). "
        f"Δ = variant mean − baseline ({table.baseline}) mean. p: {TEST_NAME}. "
        "Bold = best mean per column. flag = seeds left out (failed, running, missing), never averaged."
    )


def to_csv(table: AblationTable) -> str:
    """Numbers only: variant, is_baseline, flag, then `<metric>.<stat>` for every metric and STATS."""
    columns = {
        "is_baseline": [v == table.baseline for v in table.variants],
        "flag": [table.flags.get(v, "") for v in table.variants],
    }
    for metric in table.metrics:
        for stat in STATS:
            columns[f"{metric}.{stat}"] = table.stats[(metric, stat)].to_numpy()
    return pd.DataFrame(columns, index=pd.Index(table.variants, name="variant")).to_csv()


def to_markdown(table: AblationTable, digits: int = 2) -> str:
    text, bold = display_frame(table, digits)
    header = ["variant", *text.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 2) + [":--"]) + "|"]
    for label, row, marks in zip(text.index, text.to_numpy(), bold.to_numpy()):
        cells = [f"**{value}**" if mark else value for value, mark in zip(row, marks)]
        lines.append("| " + " | ".join([str(label), *cells]).replace("\n", " ") + " |")
    notes = "".join(f"\n> note: {note}" for note in table.notes)
    return f"## {table.sweep}\n\n{caption(table)}\n\n" + "\n".join(lines) + "\n" + (notes + "\n" if notes else "")


def _styler(table: AblationTable, digits: int) -> "pd.io.formats.style.Styler":
    text, bold = display_frame(table, digits)
    css = bold.replace({True: "font-weight: bold;", False: ""})
    return text.style.apply(lambda _: css, axis=None)


LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "--", "−": "-", "<": r"$<$"}


def _latex_symbols(text: str) -> str:
    for symbol, latex in LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def to_latex(table: AblationTable, digits: int = 2) -> str:
    # escape first (pandas does it before the formatter), then turn symbols into math
    symbols: Callable[[object], str] = lambda value: _latex_symbols(str(value))
    styler = _styler(table, digits).format(symbols, escape="latex")
    styler = styler.format_index(symbols, escape="latex", axis=0).format_index(symbols, escape="latex", axis=1)
    return styler.to_latex(
        convert_css=True,
        hrules=True,
        caption=_latex_symbols(caption(table).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")),
        label=f"tab:{table.sweep}",
        column_format="l" + "r" * (3 * len(table.metrics)) + "l",
    )


def to_html(table: AblationTable, digits: int = 2) -> str:
    styler = _styler(table, digits).format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    styler = styler.set_uuid("ablations")  # not a random id: the same runs give the same bytes
    styler = styler.set_caption(html.escape(caption(table))).set_table_styles(
        [
            {"selector": "", "props": "border-collapse: collapse; font-family: sans-serif; font-size: 0.9em;"},
            {"selector": "th, td", "props": "border: 1px solid #ccc; padding: 3px 6px; text-align: right;"},
            {"selector": "caption", "props": "caption-side: top; text-align: left; padding: 4px;"},
        ]
    )
    notes = "".join(f"<p>note: {html.escape(note)}</p>" for note in table.notes)
    name = html.escape(table.sweep)
    head = f"<head><meta charset='utf-8'><title>{name}</title></head>"
    return f"<!DOCTYPE html>\n<html>{head}<body>\n<h2>{name}</h2>\n{styler.to_html()}\n{notes}</body></html>\n"


RENDERERS: dict[str, Callable[[AblationTable], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "latex": to_latex,
    "html": to_html,
}
