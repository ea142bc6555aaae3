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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from workbench.config import ConfigError
from workbench.pids import pid_alive

FIGURE_FORMATS = ("png", "pdf")
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
            fig.savefig(tmp, format=fmt, dpi=120)
        written.append(path)
    return written


def _section(folder: Path, root: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    tables = [p for p in files if p.suffix in TABLE_SUFFIXES and p.name != INDEX]
    images = [p for p in files if p.suffix == ".png"]
    if not tables and not images:
        return ""
    rel = lambda p: html.escape(p.relative_to(root).as_posix(), quote=True)  # noqa: E731
    parts = [f"<h2>{html.escape(folder.relative_to(root).as_posix() or 'reports')}</h2>"]
    if tables:
        parts.append("<p>tables: " + " · ".join(f"<a href='{rel(p)}'>{html.escape(p.name)}</a>" for p in tables) + "</p>")
    for image in images:
        pdf = image.with_suffix(".pdf")
        link = f" (<a href='{rel(pdf)}'>pdf</a>)" if pdf.exists() else ""
        parts.append(
            f"<figure><a href='{rel(image)}'><img src='{rel(image)}' style='max-width: 100%;'></a>"
            f"<figcaption>{html.escape(image.stem)}{link}</figcaption></figure>"
        )
    return "\n".join(parts)


def write_index(root: Path) -> Path:
    """One page linking every table and figure under `root` (rebuilt from what is on disk)."""
    folders = [root] + sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith("."))
    sections = [s for s in (_section(folder, root) for folder in folders) if s]
    body = "\n".join(sections) or "<p>No reports yet: run <code>workbench report ablations</code>.</p>"
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>workbench reports</title></head>\n"
        "<body style='font-family: sans-serif; max-width: 1100px; margin: auto;'>\n"
        "<h1>workbench reports</h1>\n<p>Rebuild: <code>workbench report ablations</code> "
        "and <code>workbench report attention RUN_ID</code> (see README.md).</p>\n"
        f"{body}\n</body></html>\n"
    )
    return write_text(root / INDEX, page)
