"""`workbench sweep` below the CLI: list the sweeps, or run one here or through SLURM.

cli.py parses the options into `SweepOptions` / `SlurmSweepOptions` and calls
`execute`, which loads the spec, hands it to the launcher and turns the result
into what the person sees: a summary, and an exit code or the error of a failed sweep.
"""

from __future__ import annotations

from collections.abc import Callable

from workbench import sweeps
from workbench.errors import EXIT_INTERRUPTED, EXIT_OK
from workbench.sweeps import dispatch, slurm


def execute(
    name: str,
    overrides: list[str],
    options: sweeps.SweepOptions,
    *,
    launcher: str,
    on_slurm: slurm.SlurmSweepOptions,
    show_status: bool = False,
    cancel: bool = False,
    echo: Callable[..., None] = print,
) -> int:
    """Run (or resume) sweep `name`, or `list` the named sweeps; the exit code.

    `echo(text, err=True)` writes to stderr. A sweep whose trials failed raises its error."""
    if name == "list":
        echo(sweeps.spec_table(sweeps.list_specs()))
        return EXIT_OK
    spec = sweeps.load_spec(name, overrides, options.max_seeds)
    if options.yes:
        echo(sweeps.compute_estimate(spec), err=True)
    result = dispatch.sweep_command(
        spec,
        list(overrides),
        options,
        launcher=launcher,
        slurm=on_slurm,
        show_status=show_status,
        cancel_jobs=cancel,
        echo=echo,
    )
    if result is None:  # --status, --cancel, --no-wait
        return EXIT_OK
    echo(result.summary())
    if result.interrupted:
        echo(f"interrupted: `workbench sweep {name}` finishes the missing trials", err=True)
        return EXIT_INTERRUPTED
    problem = result.problem()
    if problem is not None:
        raise problem
    return EXIT_OK
