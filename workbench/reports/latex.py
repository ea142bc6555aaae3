"""The ablation table as a LaTeX float to paste into a paper.

Needs only `\\usepackage{booktabs}` (the rest is LaTeX2e core: \\textsuperscript,
\\dag, \\ddag, \\S). One column per metric; each variant takes two lines: mean with a
small ± std, then a small Δ vs the baseline (under the variant's name: the
device-hours the row cost); † / ‡ after Holm's correction, bold best, underlined
second, a real minus sign ($-$). Up to `COLUMN_METRICS` metrics the
float is a `table` that fits \\columnwidth of a two-column article; wider tables are
`table*` (\\textwidth). Tests compile both with pdflatex and check for overfull boxes.
"""

from __future__ import annotations

import re

from workbench.reports import latex_text
from workbench.reports.cells import BELOW_REF, CONSTANT, MINUS, Cell, Grid, grid, metric_label, seeds_text
from workbench.reports.stats import AblationTable

COLUMN_METRICS = 4  # at most this many metric columns: one-column `table`
PACKAGES = ("booktabs",)
SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
SYMBOLS = {
    MINUS: "$-$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "—": "--",
    "<": r"$<$",
    ">": r"$>$",
    "†": r"\textsuperscript{\dag}",
    "‡": r"\textsuperscript{\ddag}",
    BELOW_REF: r"\textsuperscript{$\circ$}",
    CONSTANT: r"\textsuperscript{\S}",
}
MARKS = {
    "†": r"\dag",
    "‡": r"\ddag",
    BELOW_REF: r"$\circ$",
    CONSTANT: r"\S",
}  # one superscript for all of a cell's marks
REFERENCE_KINDS = {"blind": "blind", "majority": "maj.", "chance": "chance"}
HEADER_WRAP = 12  # longer column headers go on two lines
SHORT_VERDICTS = {"equivalent": "equiv.", "unresolved": "unres.", "baseline": "base"}  # the caption spells them out


def tex(text: str) -> str:
    """Plain text -> LaTeX: specials escaped, −, ±, Δ, †, ‡ as LaTeX symbols, any other character
    that is not printable ASCII as LaTeX2e core typesets it (`latex_text`: CJK, emoji, newlines ...)."""
    return "".join(
        SPECIALS.get(c) or SYMBOLS.get(c) or (c if " " <= c <= "~" else latex_text.typeset(c, tex)) for c in text
    )


def header(text: str) -> str:
    """A column header, on two lines (a nested tabular) when long."""
    if len(text) <= HEADER_WRAP or " " not in text:
        return tex(text)
    middle = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c == " "]
    cut = min(spaces, key=lambda i: abs(i - middle))
    return r"\begin{tabular}[b]{@{}c@{}}" + tex(text[:cut]) + r"\\" + tex(text[cut + 1 :]) + r"\end{tabular}"


def value_cell(cell: Cell) -> str:
    if cell.n == 0:
        return "--"
    mean = tex(cell.mean)
    mean = rf"\textbf{{{mean}}}" if cell.rank == 1 else rf"\underline{{{mean}}}" if cell.rank == 2 else mean
    std = rf"{{\scriptsize$\pm${tex(cell.std)}}}" if cell.std else ""
    short = rf"{{\scriptsize($n{{=}}{cell.n}$)}}" if cell.short else ""
    marks = "".join(MARKS[m] for m in cell.mark + cell.flags)
    return f"{mean}{std}" + (rf"\textsuperscript{{{marks}}}" if marks else "") + short


def delta_cell(cell: Cell) -> str:
    return rf"{{\scriptsize {tex(cell.delta)}}}" if cell.delta else ""


def caption(g: Grid) -> str:
    table = g.table
    base = "" if g.baseline_label == "baseline" else f" ({tex(g.baseline_label)})"
    text = (
        rf"{tex(table.sweep)}: mean{{\scriptsize$\pm$sd}} over {tex(seeds_text(table).split(' (')[0])}; "
        rf"below: $\Delta$ vs.\ baseline{base}, and the {tex(g.cost_unit)} summed over seeds. "
        rf"\dag/\ddag: $p<0.05/0.01$, paired $t$-test, Holm over {table.comparisons}."
    )
    if g.has_reference:
        text += r" $^\circ$: not above the reference; \S: constant."
    if g.verdicts:
        text += (
            rf" Verdict on {tex(metric_label(table.verdict_metric))} ($n$ seeds; below: the CI of $\Delta$): "
            rf"better/worse: significant after Holm; equiv.: CI inside $\pm\delta$; unres.: the seeds ran out. "
            rf"Test: {tex(table.design)}."
        )
    return text


def verdict_cells(g: Grid, variant: str) -> tuple[list[str], list[str]]:
    """The verdict column's two lines: the verdict, then seeds and the CI of Δ (none without verdicts)."""
    if not g.verdicts:
        return [], []
    cell = g.verdicts[variant]
    word = SHORT_VERDICTS.get(cell.verdict, cell.verdict)
    return [rf"{tex(word)}{{\scriptsize~$n{{=}}{cell.seeds}$}}"], [
        rf"{{\scriptsize {tex(cell.ci)}}}" if cell.ci else ""
    ]


def to_latex(table: AblationTable) -> str:
    g = grid(table)
    wide = len(table.metrics) + 2 * bool(g.verdicts) > COLUMN_METRICS  # the verdict column is about two wide
    env = "table*" if wide else "table"
    lines = [
        f"% {env} from `workbench report ablations` (sweep {latex_text.comment(table.sweep)}); needs "
        f"\\usepackage{{{','.join(PACKAGES)}}}",
        rf"\begin{{{env}}}[t]",
        r"\centering",
        r"\footnotesize",
        rf"\setlength{{\tabcolsep}}{{{'2pt' if g.verdicts else '2.5pt'}}}",  # the verdict column's room
        rf"\caption{{{caption(g)}}}",
        rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:.-]+', '-', table.sweep)}}}",
        rf"\begin{{tabular}}{{@{{}}l{'r' * len(table.metrics)}{'l' if g.verdicts else ''}@{{}}}}",
        r"\toprule",
        " & ".join(
            [header(g.header), *(header(label) for label in g.metric_labels.values())]
            + (["verdict"] if g.verdicts else [])
        )
        + r" \\",
        r"\midrule",
    ]
    if g.has_reference:
        refs = [
            rf"{tex(r.value)}{{\scriptsize~{REFERENCE_KINDS[r.kind]}}}" if r.kind else "--"
            for r in g.references.values()
        ]
        lines += [" & ".join([r"\textit{reference}", *refs] + ([""] if g.verdicts else [])) + r" \\", r"\midrule"]
    for variant in table.variants:
        cells = [g.cells[variant][m] for m in table.metrics]
        said, below = verdict_cells(g, variant)
        lines.append(" & ".join([tex(g.labels[variant]), *map(value_cell, cells), *said]) + r" \\")
        cost = rf"{{\scriptsize\quad {tex(g.cost[variant])} {tex(g.cost_unit)}}}"  # under the name: what the row cost
        lines.append(" & ".join([cost, *map(delta_cell, cells), *below]) + r" \\[1pt]")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}", ""]
    return "\n".join(lines)
