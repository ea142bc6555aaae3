"""`workbench sweep` below the CLI: list the sweeps, or run one here or through SLURM.

cli.py parses the options into a `SweepRequest` and calls `run_sweep_command`,
which loads the spec, hands it to the launcher and turns the result into what the
person sees: a summary, and an exit code or the error of a failed sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench import sweeps
from workbench.errors import EXIT_INTERRUPTED, EXIT_OK
from workbench.launch import Launcher
from workbench.launch.slurm import SlurmResources
from workbench.sweeps import dispatch, slurm


@dataclass
class SweepRequest:
    """The options of one `workbench sweep`, as parsed (the names of cli.sweep's parameters)."""

    name: str  # a sweep name, a spec path, or `list`
    overrides: list[str] | None  # the user's --set, in order
    slots: int | None
    gpus: str | None
    per_gpu: int
    storage: str | None
    worker: bool
    resume: bool
    study_name: str | None
    tracking_uri: str | None
    heartbeat: int
    progress: bool
    yes: bool
    launcher: Launcher
    partition: str | None
    gpus_per_trial: int
    cpus_per_trial: int | None
    mem: str | None
    time_limit: str | None
    max_parallel: int
    sbatch_arg: list[str] | None
    wait: bool
    show_status: bool
    cancel: bool
    max_seeds: int | None

    def options(self) -> sweeps.SweepOptions:
        """What the sweep's processes share (storage, study, slots, tracking)."""
        return sweeps.SweepOptions(
            storage=self.storage,
            study_name=self.study_name,
            worker=self.worker,
            resume=self.resume,
            gpus=self.gpus,
            per_gpu=self.per_gpu,
            slots=self.slots,
            tracking_uri=self.tracking_uri,
            heartbeat_s=self.heartbeat,
            progress=self.progress,
            yes=self.yes,
            max_seeds=self.max_seeds,
        )

    def on_slurm(self) -> slurm.SlurmSweepOptions:
        """The worker jobs' resources (used with --launcher slurm)."""
        resources = SlurmResources(
            self.partition,
            self.gpus_per_trial,
            self.cpus_per_trial,
            self.mem,
            self.time_limit,
            list(self.sbatch_arg or []),
        )
        return slurm.SlurmSweepOptions(resources, max_parallel=self.max_parallel, wait=self.wait)


def run_sweep_command(request: SweepRequest, *, echo: Callable[..., None] = print) -> int:
    """Run (or resume) sweep `request.name`, or `list` the named sweeps; the exit code.

    `echo(text, err=True)` writes to stderr. A sweep whose trials failed raises its error."""
    if request.name == "list":
        echo(sweeps.spec_table(sweeps.list_specs()))
        return EXIT_OK
    options, overrides = request.options(), list(request.overrides or [])
    spec = sweeps.load_spec(request.name, overrides, options.max_seeds)
    if options.yes:
        echo(sweeps.compute_estimate(spec), err=True)
    result = dispatch.sweep_command(
        spec,
        overrides,
        options,
        launcher=request.launcher,
        slurm=request.on_slurm(),
        show_status=request.show_status,
        cancel_jobs=request.cancel,
        echo=echo,
    )
    if result is None:  # --status, --cancel, --no-wait
        return EXIT_OK
    echo(result.summary())
    if result.interrupted:
        echo(f"interrupted: `workbench sweep {request.name}` finishes the missing trials", err=True)
        return EXIT_INTERRUPTED
    problem = result.problem()
    if problem is not None:
        raise problem
    return EXIT_OK
