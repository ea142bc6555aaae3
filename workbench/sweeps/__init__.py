"""Named ablation sweeps run as Optuna studies, one child process per trial.

`workbench sweep NAME` = ``run_sweep(load_spec(NAME), SweepOptions(...))``.
A sweep maps each trial to config overrides; training itself never imports optuna.
Names are resolved lazily so that importing this package (e.g. in a trial's
child process) does not import optuna.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_spec": "workbench.sweeps.spec",
    "list_specs": "workbench.sweeps.spec",
    "SweepSpec": "workbench.sweeps.spec",
    "spec_table": "workbench.sweeps.spec",
    "run_sweep": "workbench.sweeps.runner",
    "SweepOptions": "workbench.sweeps.sweep",
    "SweepResult": "workbench.sweeps.runner",
    "compute_estimate": "workbench.sweeps.runner",
    "plan_slots": "workbench.sweeps.slots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench.sweeps' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
