"""`workbench data check` as the person sees it: one table row per data file, then every problem.

``check.check_dataset`` finds what is wrong; here it is laid out (a ``rich`` table of
counts, bad entries, unreadable media and text lengths), each problem named on its own
line, and the verdict given: OK, or problems (the command exits 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.data.check import check_dataset
from workbench.data.tokenizer import load_tokenizer
from workbench.errors import DataError, one_line

COLUMNS = (
    "entries",
    "bad",
    "unreadable",
    "words min/mean/max",
    "tokens min/mean/max",
    "truncated",
    "dup. captions %",
)


def report_data_check(cfg, *, decode: bool, echo: Callable[..., None]) -> bool:
    """Check every file the configured run would read, print the table and the problems; True when OK.

    `echo(text, err=True)` writes to stderr (the verdict of a failed check)."""
    problems: list[str] = []
    try:
        tokenizer = load_tokenizer(cfg.data)
    except DataError as err:
        tokenizer, problems = None, [f"tokenizer: {one_line(err).removeprefix('error: ')}"]
    summary = check_dataset(cfg, tokenizer, decode_media=decode)
    print_table(summary)
    problems += file_problems(summary)
    echo("\n".join(problems))
    if problems or not summary["ok"]:
        echo(f"data check: problems found in {summary['root']} (listed above)", err=True)
        return False
    entries = sum(report["entries"] for report in summary["files"].values())
    echo(f"data check: OK — {len(summary['files'])} files, {entries} entries in {summary['root']}")
    return True


def file_problems(summary: dict) -> list[str]:
    """One line per missing file and per problem of a file, each naming the file."""
    problems = [f"missing file: {path}" for path in summary["missing_files"]]
    return problems + [
        problem if name in problem else f"{name}: {problem}"
        for name, report in summary["files"].items()
        for problem in report["problems"]
    ]


def _stats(values: dict | None) -> str:
    return f"{values['min']}/{values['mean']}/{values['max']}" if values else "-"


def print_table(summary: dict) -> None:
    """One table row per data file: counts, bad entries, unreadable media, text lengths."""
    from rich.console import Console
    from rich.table import Table

    names = [*summary["files"], *(Path(path).name for path in summary["missing_files"])]
    table = Table(title=f"data check: {summary['root']}", title_justify="left")
    table.add_column("file", no_wrap=True, min_width=max(map(len, names), default=4))
    table.add_column("kind", no_wrap=True)
    for column in COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    for name, report in summary["files"].items():
        bad = "unreadable file" if report["bad_entries"] is None else str(report["bad_entries"])
        table.add_row(
            name,
            report["kind"],
            str(report["entries"]),
            bad,
            str(report["unreadable"]),
            _stats(report.get("text_words")),
            _stats(report.get("text_tokens")),
            str(report.get("truncated", "-")),
            str(report.get("duplicate_captions", "-")),
        )
    for path in summary["missing_files"]:
        table.add_row(Path(path).name, "-", "missing", "-", "-", "-", "-", "-", "-")
    Console(highlight=False, width=max(160, Console().width)).print(table)
