"""What workbench may replace under `data.root`: only what it made, never while a run reads it.

Regenerating ShapesWorld (another seed or size) over an existing one replaced the
whole folder: a file the user had put there was gone, and a run training on the old
data set had its data changed under it. Now

* `replacing(root, ...)` refuses when the folder holds anything the manifest does not
  account for (a file added, or one whose bytes changed; hashes recomputed as the
  generator wrote them), naming it; the warm-start cache is workbench's own and kept;
* `in_use(root)`, held by every run for as long as it reads the data set, makes
  `replacing` refuse to regenerate it underneath (a shared lock on `.<name>.inuse`
  beside the folder; the kernel drops it when the run's process ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from workbench.errors import DataError

WARMSTART = "warmstart"  # <data.root>/warmstart/: workbench's warm-start cache (warmstart/cache.py)
SHOWN = 5  # foreign files named in a refusal


def _lock_path(root: Path) -> Path:
    return root.parent / f".{root.name}.inuse"


@contextlib.contextmanager
def in_use(root: str | Path) -> Iterator[None]:
    """A run reads `root` inside: nobody regenerates it meanwhile (best effort where nothing can be locked)."""
    root = Path(root).absolute()
    try:
        handle = open(_lock_path(root), "a")
    except OSError:  # a read-only place: nothing can regenerate it either
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def foreign(root: Path, manifest: dict) -> list[str]:
    """Entries of `root` the manifest does not account for: added files, files with other bytes."""
    from workbench.data.shapes import MANIFEST  # here: shapes imports this module

    files = manifest.get("files") or {}
    folders = {key.rstrip("/") for key in files if key.endswith("/")}
    found = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name in (MANIFEST, WARMSTART):
            continue
        if name in folders and entry.is_dir() and not entry.is_symlink():
            digest = hashlib.sha256()
            inside = sorted(p for p in entry.rglob("*") if not p.is_dir())
            for path in inside:
                if path.is_symlink() or not path.is_file():
                    found.append(str(path.relative_to(root)))
                    continue
                rel = path.relative_to(root).as_posix()
                digest.update(f"{rel}\0{_sha256(path)}\n".encode())
            if digest.hexdigest() != files[name + "/"]:
                found.append(f"{name}/ (files added or changed)")
        elif name in files and entry.is_file() and not entry.is_symlink():
            if _sha256(entry) != files[name]:
                found.append(f"{name} (changed)")
        else:
            found.append(name)
    return found


@contextlib.contextmanager
def replacing(root: Path, seed: int, size: str) -> Iterator[None]:
    """Inside, `root` may be (re)generated: refused (DataError) if it holds what workbench did not
    make, or a run reads it now."""
    from workbench.data.shapes import read_manifest

    manifest = read_manifest(root) if root.is_dir() else None
    if not manifest:  # nothing there yet (or an empty folder): nothing to protect
        yield
        return
    what = (
        f"regenerating ShapesWorld in {root} (seed {manifest.get('seed')}, size {manifest.get('size')} -> seed "
        f"{seed}, size {size})"
    )
    extra = foreign(root, manifest)
    if extra:
        named = ", ".join(extra[:SHOWN]) + (f" and {len(extra) - SHOWN} more" if len(extra) > SHOWN else "")
        raise DataError(
            f"data.root: {what} would delete what workbench did not make there: {named}; move it out, "
            "or choose another data.root (--set data.root=DIR) for the new data set"
        )
    try:
        handle = open(_lock_path(root.absolute()), "a")
    except OSError:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(
                f"data.root: {what} refused: a run in progress reads that data set; wait for it to end, "
                "or choose another data.root (--set data.root=DIR)"
            ) from None
        yield
