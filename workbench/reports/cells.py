"""What each table cell says, independent of the format: the model every renderer shares.

One `Cell` per (variant, metric) holds the formatted mean, std and Δ plus its marks
(† / ‡ after Holm, ° not above the reference, § constant predictor) and its rank
(best / second). Labels and numbers are decided once here, so markdown, HTML and
LaTeX cannot disagree.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

from workbench.reports import significance
from workbench.reports.stats import AblationTable
from workbench.tasks import TASKS

TASK_LABELS = {  # metric group -> label: each task's own, plus the groups a task adds
    **{name: task.label for name, task in TASKS.items()},
    "retrieval_itc": "ITC",
    "attention": "attention",
}
METRIC_LABELS = {
    "tr_r1": "TR@1",
    "tr_r5": "TR@5",
    "tr_r10": "TR@10",
    "ir_r1": "IR@1",
    "ir_r5": "IR@5",
    "ir_r10": "IR@10",
    "r_mean": "R mean",
    "acc": "acc",
    "in_object": "in-object",
    "gradcam_in_object": "Grad-CAM in-object",
}
MINUS = "−"  # U+2212: a real minus sign, not a hyphen
DASH = "—"
MAX_DIGITS = 4
BELOW_REF, CONSTANT = "°", "§"
PAIR = re.compile(r"^([^=,]+)=([^=,]+)$")


def metric_label(key: str) -> str:
    """'eval/retrieval/tr_r1' -> 'TR@1', 'eval/video_retrieval/ir_r1' -> 'video IR@1', 'eval/vqa/acc' -> 'VQA acc'."""
    parts = key.split("/")
    if parts[0] == "eval":
        parts = parts[1:]
    if len(parts) == 2:
        task, metric = parts
        return f"{TASK_LABELS.get(task, task)} {METRIC_LABELS.get(metric, metric)}".strip()
    return "/".join(parts)


def decimals(means: list[float], minimum: int) -> int:
    """Decimals for a column: `minimum` for values >= 1, more for fractions (0.051, not 0.1)."""
    top = max((abs(m) for m in means if not math.isnan(m)), default=0.0)
    if top == 0.0:
        return minimum
    return min(MAX_DIGITS, max(minimum, minimum - math.floor(math.log10(top))))


def number(value: float, digits: int) -> str:
    return DASH if math.isnan(value) else f"{value:.{digits}f}".replace("-", MINUS)


def signed(value: float, digits: int) -> str:
    if math.isnan(value):
        return DASH
    text = f"{abs(value):.{digits}f}"
    return ("+" if value >= 0 or float(text) == 0 else MINUS) + text


def hours(value: float) -> str:
    """Device-hours, short: '<0.01', '0.42', '12.3', '140'."""
    if math.isnan(value) or value <= 0:
        return "0"
    if value < 0.01:
        return "<0.01"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _common_suffix(words: list[str]) -> str:
    suffix = words[0]
    for word in words[1:]:
        while not word.endswith(suffix):
            suffix = suffix[1:]
    return suffix[suffix.find("_") :] if "_" in suffix else ""


def variant_labels(variants: list[str]) -> tuple[str, dict[str, str]]:
    """Grid names 'image_mask_ratio=0.8,text_mask_ratio=0.4' -> header 'image / text mask ratio'
    and label '0.8 / 0.4'; any other names stay as they are under the header 'variant'."""
    parsed = {}
    for name in variants:
        pairs = [PAIR.match(part) for part in name.split(",")]
        if not all(pairs):
            continue
        parsed[name] = [(m.group(1), m.group(2)) for m in pairs]
    keys = {tuple(k for k, _ in pairs) for pairs in parsed.values()}
    if len(parsed) < max(2, len(variants) - 1) or len(keys) != 1:
        return "variant", {v: v for v in variants}
    (names,) = keys
    suffix = _common_suffix(list(names)) if len(names) > 1 else ""
    heads = [n[: len(n) - len(suffix)] if suffix else n for n in names]
    header = " / ".join(h.replace("_", " ") for h in heads) + suffix.replace("_", " ")
    return header, {v: " / ".join(val for _, val in parsed[v]) if v in parsed else v for v in variants}


@dataclass(frozen=True)
class Cell:
    mean: str  # '16.0' or '—'
    std: str  # '3.6' or '' (one seed)
    delta: str  # '+4.0', '−1.0' or '' (baseline, no value)
    ci: str  # '[−1.2, 9.2]' or ''
    p: str  # Holm-adjusted p, '0.057' / '<0.001' / '' (no test)
    seeds_needed: str  # for a non-significant Δ: '12', '>1000' or ''
    mark: str  # '†', '‡' or ''
    rank: int  # 1 best, 2 second, 0 otherwise
    direction: int  # sign of a significant Δ (+1 / -1), 0 when not significant
    below_ref: bool  # not significantly above the reference row
    constant: bool  # looks like a constant predictor
    n: int
    short: bool  # fewer finished seeds than the sweep planned

    @property
    def flags(self) -> str:
        return (BELOW_REF if self.below_ref else "") + (CONSTANT if self.constant else "")


@dataclass(frozen=True)
class VerdictCell:
    """A row's verdict on the objective: what it says, the seeds it rests on, the CI of Δ."""

    verdict: str  # 'better', 'worse', 'equivalent', 'open', 'unresolved', 'baseline'
    seeds: str  # finished seeds of the objective: '5'
    ci: str  # the (repeated) CI of Δ, '[−1.2, +9.2]', or ''
    to_resolve: str  # open/unresolved: paired seeds a fixed test would need for 80% power ('14', '>1000') or ''

    @property
    def text(self) -> str:
        return f"{self.verdict} (~{self.to_resolve} seeds)" if self.to_resolve else self.verdict


@dataclass(frozen=True)
class Reference:
    value: str  # '41.0'
    kind: str  # 'blind' | 'majority' | 'chance' | '' (none logged)


@dataclass(frozen=True)
class Grid:
    """A table as text: `cells[variant][metric]`, `references[metric]`, plus labels."""

    table: AblationTable
    header: str  # the variant column's header
    labels: dict[str, str]  # variant -> row label
    metric_labels: dict[str, str]
    cells: dict[str, dict[str, Cell]]
    references: dict[str, Reference]
    cost: dict[str, str]
    cost_unit: str  # 'GPU-h' | 'CPU-h' | 'device-h'
    verdicts: dict[str, VerdictCell] = field(default_factory=dict)  # every variant, when the table has verdicts

    @property
    def has_reference(self) -> bool:
        return any(ref.kind for ref in self.references.values())

    @property
    def baseline_label(self) -> str:
        return self.labels.get(self.table.baseline, self.table.baseline)


def p_text(value: float) -> str:
    if math.isnan(value):
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


@functools.lru_cache(maxsize=16)  # md, latex and html of one table share it
def grid(table: AblationTable) -> Grid:
    header, labels = variant_labels(table.variants)
    expected = len(table.expected_seeds)
    cells: dict[str, dict[str, Cell]] = {v: {} for v in table.variants}
    refs: dict[str, Reference] = {}
    for metric in table.metrics:
        column = table.stats[metric]
        digits = decimals(column["mean"].tolist(), 1)
        best, second = table.ranked(metric)
        reference = table.references.get(metric)
        refs[metric] = Reference(number(reference.mean, digits), reference.kind) if reference else Reference("", "")
        for variant, row in zip(table.variants, column.itertuples(index=False), strict=True):
            is_base = variant == table.baseline
            significant = not is_base and row.p_holm < significance.ALPHA
            needed = row.seeds_needed
            ci = (
                ""
                if is_base or math.isnan(row.ci_low)
                else f"[{signed(row.ci_low, digits)}, {signed(row.ci_high, digits)}]"
            )
            cells[variant][metric] = Cell(
                mean=number(row.mean, digits),
                std="" if math.isnan(row.std) else number(row.std, digits),
                delta="" if is_base or math.isnan(row.delta) else signed(row.delta, digits),
                ci=ci,
                p="" if is_base else p_text(row.p_holm),
                seeds_needed=""
                if math.isnan(needed)
                else (f">{significance.MAX_SEEDS}" if math.isinf(needed) else f"{needed:.0f}"),
                mark="" if is_base else significance.marks(row.p_holm),
                rank=1 if variant in best else 2 if variant in second else 0,
                direction=int(math.copysign(1, row.delta)) if significant and not math.isnan(row.delta) else 0,
                below_ref=reference is not None and row.n > 0 and not (row.p_above_ref < significance.ALPHA),
                constant=bool(row.constant),
                n=int(row.n),
                short=bool(expected) and not table.adaptive and int(row.n) < expected,
            )
    kind = table.device_kind
    return Grid(
        table=table,
        header=header,
        labels=labels,
        metric_labels={m: metric_label(m) for m in table.metrics},
        cells=cells,
        references=refs,
        cost={v: hours(table.device_hours.get(v, math.nan)) for v in table.variants},
        cost_unit=f"{kind}-h",
        verdicts=verdict_cells(table),
    )


def verdict_cells(table: AblationTable) -> dict[str, VerdictCell]:
    """The verdict column: per variant its verdict on the objective, seeds and CI of Δ."""
    if not table.verdict_metric:
        return {}
    digits = decimals(table.stats[(table.verdict_metric, "mean")].tolist(), 1)
    out = {}
    for variant in table.variants:
        seeds = str(int(table.cell(variant, table.verdict_metric, "n")))
        found = table.verdicts.get(variant)
        if variant == table.baseline or found is None:
            out[variant] = VerdictCell("baseline" if variant == table.baseline else DASH, seeds, "", "")
            continue
        ci = "" if math.isnan(found.ci_low) else f"[{signed(found.ci_low, digits)}, {signed(found.ci_high, digits)}]"
        need = found.seeds_to_resolve
        to_resolve = "" if math.isnan(need) else (f">{significance.MAX_SEEDS}" if math.isinf(need) else f"{need:.0f}")
        out[variant] = VerdictCell(found.verdict, seeds, ci, to_resolve)
    return out


def improvement_lines(table: AblationTable) -> list[str]:
    """The across-tasks aggregate, in words: what it means, then one line per variant (none: no lines)."""
    if not table.improvements:
        return []
    labels = ", ".join(metric_label(m) for m in table.improvement_metrics)
    header, names = variant_labels(table.variants)
    lines = [
        f"Probability of improvement over the baseline across {len(table.improvement_metrics)} tasks ({labels}): "
        "the chance that a run of the variant beats a run of the baseline on a task (random seeds, ties half), "
        "averaged over tasks (rliable, Agarwal et al. 2021); 95% CI: stratified bootstrap over seeds within each "
        "task. 0.5 = no better than the baseline; a CI above 0.5 = it tends to win across tasks."
    ]
    for variant, found in table.improvements.items():
        lines.append(f"{names[variant]}: {found.probability:.2f} [{found.ci_low:.2f}, {found.ci_high:.2f}]")
    return lines


def verdict_legend(table: AblationTable) -> str:
    """What the verdict column means and which test made it (the caption's last sentences)."""
    if not table.verdict_metric:
        return ""
    label = metric_label(table.verdict_metric)
    interval = "repeated confidence interval (valid at every look)" if table.adaptive else "confidence interval"
    return (
        f"Verdict on {label} vs the baseline: better / worse = significant after Holm; equivalent = the CI of Δ "
        f"inside ±δ; open = more seeds may decide it; unresolved = the seeds ran out (~N: paired seeds a fixed test "
        f"would need for 80% power at the observed Δ and spread). CI of Δ: the {interval} the verdict used; "
        f"seeds: finished seeds of the row. Test: {table.design}."
    )


def seeds_text(table: AblationTable) -> str:
    seeds = table.expected_seeds
    if table.adaptive and seeds:
        return f"up to {len(seeds)} seeds, added while the comparison was open (seeds column)"
    if not seeds:
        return "seeds: none recorded"
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def legend(g: Grid) -> str:
    """The plain-text caption shared by markdown and HTML (LaTeX writes its own, shorter)."""
    table = g.table
    parts = [
        f"Mean ± std over {seeds_text(table)}; (Δ) = variant − baseline"
        + ("." if g.baseline_label == "baseline" else f" ({g.baseline_label})."),
        f"† p < 0.05, ‡ p < 0.01: paired t-test, Holm-corrected over {table.comparisons} variant(s).",
    ]
    if g.has_reference:
        parts.append(
            f"{BELOW_REF} not significantly above the reference row (one-sided t-test, p ≥ 0.05); "
            f"{CONSTANT} constant predictor."
        )
    else:
        parts.append(f"No reference (chance/majority/blind) metric logged; {CONSTANT} constant predictor.")
    parts.append(f"Bold = best, underlined = second. {g.cost_unit} = device-hours summed over seeds.")
    if g.verdicts:
        parts.append(verdict_legend(table))
    return " ".join(parts)
