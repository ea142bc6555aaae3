"""How the `workbench` commands fail: one line on stderr and an exit code, never a traceback.

``OneLineErrorsGroup`` answers mistakes Click would box or misname while parsing
(`--set key value`, a value an enum option does not allow); ``friendly`` wraps each
command's body: our errors become one line and their exit code (2 = bad input,
1 = runtime, 128+N = signal N), anything unexpected one line naming the command and
a log file (workbench.crash), and the MLflow runs the process left open are ended.
``--debug`` (``debug``, set by the top-level callback) shows the traceback instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer

from workbench import errors, interrupts
from workbench.cli_support import enum_choice_error, missing_equals
from workbench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USER_ERROR

debug = False  # --debug: re-raise, so the traceback shows


class OneLineErrorsGroup(typer.core.TyperGroup):
    """The top-level group: `--set key value` gets a hint, not Click's "unexpected extra argument";
    a value an enum option does not allow gets one line, not a boxed block."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        hint = missing_equals(args)
        if hint:
            typer.echo(hint, err=True)
            raise typer.Exit(EXIT_USER_ERROR)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        """A subcommand's enum option given a value it does not allow: one line, exit 2."""
        try:
            return super().invoke(ctx)
        except typer.BadParameter as err:
            line = enum_choice_error(err)
            if line is None:
                raise
            typer.echo(line, err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None


def friendly(fn: Callable) -> Callable:
    """Turn our errors into one line + exit code (2 = bad input, 1 = runtime, 128+N = signal N);
    anything unexpected into one line naming the command and a log file (workbench.crash)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with interrupts.sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except interrupts.Interrupted as err:
            _end_open_runs("KILLED")
            if not err.quiet:
                typer.echo(err.message(), err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            ended = _end_open_runs("KILLED")
            typer.echo("interrupted" + (f": MLflow run {', '.join(ended)} marked KILLED" if ended else ""), err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except errors.USER_ERRORS + errors.RUNTIME_ERRORS + (OSError,) as err:
            _end_open_runs("FAILED")
            if debug:
                raise
            typer.echo(errors.one_line(err), err=True)
            raise typer.Exit(errors.exit_code(err)) from None
        except Exception as err:  # the last resort: a bug or a case nobody foresaw
            if debug:
                _end_open_runs("FAILED")
                raise
            from workbench import crash  # imports mlflow: only on this path

            typer.echo(crash.unexpected(_command_name(fn), err), err=True)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


def _end_open_runs(status: str) -> list[str]:
    """End the MLflow runs this process left open (`tracking.end_open_runs`); mlflow is imported
    only when a command has failed, not before every command."""
    from workbench import tracking

    return tracking.end_open_runs(status)


def _command_name(fn: Callable) -> str:
    """'run', 'report ablations', 'runs prune', ...: the words a person typed, from the function's name
    (`<group>_<command>`; `evaluate` is `eval`, a Python builtin's name)."""
    return "eval" if fn.__name__ == "evaluate" else fn.__name__.replace("_", " ")
