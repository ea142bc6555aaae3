"""Write report files atomically (temp name + rename) and the reports/ index page.

A report killed half-way leaves the previous files or none, never a truncated
table or image under its real name. A kill -9 mid-write can leave a hidden
`.<name>.tmp-<pid>` file (no cleanup runs then); the next write in that folder
removes it once its pid is gone, and the index never links hidden files.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from workbench import report_paths
from workbench.errors import ConfigError
from workbench.pids import pid_alive
from workbench.reports.tables import TABLE_CSS

FIGURE_FORMATS = ("png", "pdf")
FIGURE_DPI = 100
TEMP_PREFIX, TEMP_MARK = ".", ".tmp-"  # `.<name>.tmp-<pid>`: hidden, and the writer's pid says if it is stale
INDEX = "index.html"
TABLE_SUFFIXES = (".md", ".csv", ".tex", ".html")


def safe_name(name: str) -> str:
    """A sweep name or run id as one path component."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it onto `path` only when the block succeeds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out: cannot create {path.parent}: {err.strerror or err}") from None
    remove_stale_temps(path.parent)
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temp_owner(path: Path) -> int | None:
    """The pid in a temp name `.<name>.tmp-<pid>`, else None (not one of our temp files)."""
    head, mark, pid = path.name.rpartition(TEMP_MARK)
    return int(pid) if head.startswith(TEMP_PREFIX) and mark and pid.isdigit() else None


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files in `folder` left by writers that were killed (kill -9 skips every cleanup)."""
    removed = []
    for tmp in folder.glob(f"{TEMP_PREFIX}*{TEMP_MARK}*"):
        owner = temp_owner(tmp)
        if owner is not None and not pid_alive(owner):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def save_figure(fig, stem: Path, formats: tuple[str, ...] = FIGURE_FORMATS) -> list[Path]:
    """A matplotlib Figure as `<stem>.png` and `<stem>.pdf`."""
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=FIGURE_DPI)
        written.append(path)
        fig.set_layout_engine("none")  # the layout of the first save holds for the next: not computed again
    return written


SECTION = "section.html"  # a sweep's part of the index, written by the report (paths relative to the root)
SWEEP_PAGE = report_paths.PAGE  # the same section as a page of its own (paths relative to its folder)
LABEL_FILE = "label.txt"  # a folder's heading in the index (attention: "baseline/seed0 vs +scl/seed0")
PAGE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; margin: 0.2em 0; } .meta b { color: #222; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } .files a { margin-right: 0.6em; }
"""


def page(title: str, body: str, css: str = "") -> str:
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_CSS}{css}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def figure_html(image: str, caption: str, pdf: str | None = None) -> str:
    """An inline figure (image links to itself, pdf linked when there is one)."""
    link = f" (<a href='{html.escape(pdf, quote=True)}'>pdf</a>)" if pdf else ""
    src = html.escape(image, quote=True)
    return (
        f"<figure><a href='{src}'><img src='{src}' alt='{html.escape(caption, quote=True)}'></a>"
        f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>"
    )


def _folder_section(folder: Path, root: Path) -> str:
    """A folder the report did not write a section for (attention maps, ...): its figures inline."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    tables = [
        p for p in files if p.suffix in TABLE_SUFFIXES and p.name not in (INDEX, SECTION, SWEEP_PAGE, "README.md")
    ]
    images = [p for p in files if p.suffix == ".png"]
    if not tables and not images:
        return ""
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    label_file = folder / LABEL_FILE
    heading = (
        label_file.read_text(encoding="utf-8").strip()
        if label_file.is_file()
        else (rel(folder) if folder != root else "reports")
    )
    parts = [f"<section><h2>{html.escape(heading)}</h2>"]
    if tables:
        parts.append(
            "<p class='files'>files: "
            + "".join(f"<a href='{html.escape(rel(p), quote=True)}'>{html.escape(p.name)}</a>" for p in tables)
            + "</p>"
        )
    for image in images:
        pdf = image.with_suffix(".pdf")
        parts.append(
            figure_html(rel(image), f"{heading}: {image.stem.replace('_', ' ')}", rel(pdf) if pdf.exists() else None)
        )
    return "\n".join(parts) + "</section>"


def write_index(root: Path) -> Path:
    """One page with every report under `root`, rebuilt from what is on disk: each sweep's
    section (header, embedded table, inline figures), then other folders' figures."""
    folders = sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith("."))
    sweeps = [f for f in folders if (f / SECTION).is_file()]
    inside_sweeps = lambda f: any(s in f.parents for s in sweeps)  # noqa: E731
    sections = [(f / SECTION).read_text(encoding="utf-8") for f in sweeps]
    sections += [
        s for s in (_folder_section(f, root) for f in [root] + folders if f not in sweeps and not inside_sweeps(f)) if s
    ]
    body = "\n".join(sections) or "<p>No reports yet: run <code>workbench report ablations</code>.</p>"
    header = (
        "<h1>workbench reports</h1>\n<p class='meta'>Rebuild: <code>workbench report ablations</code> and "
        "<code>workbench report attention RUN_ID --compare RUN_ID</code>; browse runs with <code>workbench ui</code>. "
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.</p>"
    )
    return write_text(root / INDEX, page("workbench reports", f"{header}\n{body}", TABLE_CSS))
