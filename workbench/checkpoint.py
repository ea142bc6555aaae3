"""Checkpoints: plain state dicts written atomically, loaded with weights_only=True.

A checkpoint holds everything a resumed run needs to continue to the same result:
model, objectives (heads, temperature), optimizer, scheduler, the step reached and
the RNG states. It is written to a temp name and renamed, so a kill mid-write
leaves the previous checkpoint intact; a signal waits for the write to complete
(`interrupts.critical`), and a write that fails (disk full) removes its temp file
and says so in one line.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from workbench import interrupts
from workbench.errors import DataError, RunError

LAST = "last.pt"
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class _Recording:
    """The file torch.save writes to; keeps the OSError (torch reports only "unexpected pos")."""

    def __init__(self, handle) -> None:
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def save(path: Path, state: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = None
    try:
        with interrupts.critical():  # a signal now waits until the checkpoint is complete
            with open(tmp, "wb") as handle:
                writer = _Recording(handle)
                torch.save(state, writer)
            os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)  # never leave a half-written temp file
        cause = writer.error if writer is not None and writer.error is not None else err
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            raise RunError(
                f"disk full: cannot write checkpoint {path} ({cause.strerror}); free space in "
                f"{path.parent.parent} (train.out_dir) or point train.out_dir elsewhere; the previous checkpoint "
                "is kept"
            ) from None
        raise
    return path


def torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` without torch's warnings about the file (e.g. its pickle
    protocol): a file it cannot read is reported in one line by the caller, not after a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not Path(path).is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        return torch_load(path, map_location)
    except Exception as err:  # truncated file, not a checkpoint, unsafe pickle
        raise DataError(f"cannot load checkpoint {path}: {str(err).splitlines()[0]}") from None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
