"""A resumed run trains on the data it started with, or not at all.

`--resume` of a run whose `data.root` now held another data set (another seed, files
changed by hand) either regenerated it -- replacing the user's data -- or went on
silently on different data. The run's `workbench.data_hash` tag records the
fingerprint it started with; a resume whose data has another fingerprint is refused,
naming both, before anything is generated, loaded or logged.
"""

from __future__ import annotations

from pathlib import Path

from workbench import tags as tag
from workbench import tracking
from workbench.config import RunConfig
from workbench.data import data_hash
from workbench.errors import ConfigError

SHOWN = 12  # hash characters in the message


def recorded_hash(cfg: RunConfig, run_id: str) -> str | None:
    if not cfg.tracking.enabled:
        return None
    run = tracking.client(cfg.tracking.uri).get_run(run_id)
    return run.data.tags.get(tag.DATA_HASH) or None


def refuse_changed(cfg: RunConfig, run_id: str, current: str | None = None) -> None:
    """ConfigError if `data.root`'s fingerprint (`current`, else computed when the root holds data)
    differs from the one run `run_id` was started on. A missing root is left to data preparation."""
    recorded = recorded_hash(cfg, run_id)
    if not recorded:
        return
    if current is None:
        root = Path(cfg.data.root)
        if not root.is_dir() or not any(root.iterdir()):
            return
        current = data_hash(cfg.data)
    if current != recorded:
        raise ConfigError(
            f"--resume: data.root {cfg.data.root} holds other data than run {run_id} was trained on "
            f"(data hash now {current[:SHOWN]}, recorded {recorded[:SHOWN]}); the run and the data are left as "
            f"they are — point data.root at the run's data (--set data.root=DIR), or start a new run on this "
            f"data: workbench run --from {run_id}"
        )
