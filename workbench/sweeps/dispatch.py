"""What `workbench sweep NAME` does once its options are parsed: run the sweep on this machine
(``runner``) or in SLURM jobs (``slurm``), or show ``--status`` / ``--cancel`` its jobs."""

from __future__ import annotations

from collections.abc import Callable

from workbench.errors import ConfigError
from workbench.launch import Launcher
from workbench.sweeps import slurm as on_slurm
from workbench.sweeps.runner import SweepResult, run_sweep
from workbench.sweeps.spec import SweepSpec
from workbench.sweeps.study import quiet_optuna
from workbench.sweeps.sweep import SweepOptions

LOCAL_ONLY = {
    "--slots": lambda o: o.slots is not None,
    "--gpus": lambda o: o.gpus is not None,
    "--per-gpu": lambda o: o.per_gpu != 1,
    "--worker": lambda o: o.worker,
}


def sweep_command(
    spec: SweepSpec,
    sets: list[str],
    options: SweepOptions,
    *,
    launcher: Launcher,
    slurm: on_slurm.SlurmSweepOptions,
    show_status: bool = False,
    cancel_jobs: bool = False,
    echo: Callable[[str], None] = print,
) -> SweepResult | None:
    """Run the sweep (None for --status, --cancel and --no-wait, which only print)."""
    if show_status and cancel_jobs:
        raise ConfigError("--status and --cancel exclude each other: --status shows the sweep, --cancel stops its jobs")
    if launcher == "slurm" and not (show_status or cancel_jobs):
        local = [flag for flag, used in LOCAL_ONLY.items() if used(options)]
        if local:
            raise ConfigError(
                f"{local[0]} is for trials on this machine; with --launcher slurm use --max-parallel and "
                "--gpus-per-trial"
            )
    with quiet_optuna():
        if show_status or cancel_jobs:
            echo((on_slurm.status if show_status else on_slurm.cancel)(spec, options))
            return None
        if launcher == "slurm":
            return on_slurm.launch(spec, sets, options, slurm, echo)
        return run_sweep(spec, options)
