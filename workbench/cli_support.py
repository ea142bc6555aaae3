"""Small pieces of CLI behaviour kept out of cli.py: versions, argument hints, presets.

cli.py only parses and delegates; what these compute (the `--version` text, the
hint for `--set key value`, the line for a refused enum value, the `--quick`
overrides, options as overrides) is plain data and tested here.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
from enum import Enum

import typer

from workbench import __version__
from workbench.errors import did_you_mean

# `workbench run --quick`: the same model and objectives, a budget that shows the whole
# run (pre-training, retrieval, one fine-tune, the attention score) in a few minutes on
# 2 CPU cores. Its numbers are for checking the plumbing, not for conclusions.
# Retrieval ranks by ITC alone (rerank_k 0): re-ranking every row's top 16 with ITM
# took 1:37 of a quick run's ~4 min. A missing ViT warm start is skipped (run_command).
# Later --set overrides win over these.
QUICK_OVERRIDES = [
    "train.steps=20",
    "train.warmup_steps=2",
    "train.log_every=5",
    "train.checkpoint_every=0",
    "eval.tasks=[retrieval,vqa]",
    "eval.rerank_k=0",
    "eval.finetune_steps=10",
]
NO_EVAL_OVERRIDE = "eval.tasks=[]"


def version_text() -> str:
    """`workbench --version`: ours and the versions that decide results and stores."""
    parts = [f"workbench {__version__}"]
    for name in ("torch", "mlflow", "optuna"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} missing")
    parts.append(f"python {platform.python_version()}")
    return ", ".join(parts)


def print_version(value: bool) -> None:
    """`--version` (an eager option's callback): the versions, then stop."""
    if value:
        typer.echo(version_text())
        raise typer.Exit()


def quiet_libraries() -> None:
    """Keep the terminal for our progress and errors: no MLflow INFO lines or download bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


SET_OPTIONS = ("--set", "-s")


def missing_equals(args: list[str]) -> str | None:
    """The one-line error for `--set key value` (a space instead of `=`), or None.

    Click would say "unexpected extra argument (value)", which does not point at the
    mistake. Only flagged when the next word is not an option, so `--set a.b=1` and
    `--set a.b --debug` (the latter a plain error of its own) are left alone.
    """
    for i, arg in enumerate(args[:-1]):
        if arg in SET_OPTIONS:
            key, value = args[i + 1], args[i + 2] if i + 2 < len(args) else None
        elif arg.startswith("--set=") and "=" not in arg.removeprefix("--set="):
            key, value = arg.removeprefix("--set="), args[i + 1]
        else:
            continue
        if "=" in key or value is None or value.startswith("-"):
            continue
        return f"error: --set {key} {value}: missing '=' — write --set {key}={value}"
    return None


def quick_overrides(quick: bool, no_eval: bool, overrides: list[str] | None) -> list[str]:
    """`--quick` first and the user's `--set`s after it (theirs win); `--no-eval` last (it is explicit)."""
    return (QUICK_OVERRIDES if quick else []) + list(overrides or []) + ([NO_EVAL_OVERRIDE] if no_eval else [])


def option_overrides(
    overrides: list[str] | None, device: str | None = None, tracking_uri: str | None = None
) -> list[str]:
    """`--set`s plus the options that are config keys: `--device` (train.device), `--tracking-uri` (tracking.uri)."""
    out = list(overrides or [])
    if device:
        out.append(f"train.device={device}")
    if tracking_uri:
        out.append(f"tracking.uri={tracking_uri}")
    return out


def enum_choice_error(err: typer.BadParameter) -> str | None:
    """The one-line error for a value an enum option (`--launcher`) does not allow, or None for
    any other refusal. Typer's own is a boxed block with the values quoted; this one reads like
    every other bad input: `error: --launcher: 'slrum' is not one of local, slurm — did you mean 'slurm'?`."""
    descriptor = getattr(err.param, "type_descriptor", None)
    kind = getattr(descriptor, "annotation", None)
    found = re.search(r"'(.*)' is not one of", err.message)
    if not (isinstance(kind, type) and issubclass(kind, Enum) and found):
        return None
    allowed = [str(member.value) for member in kind]
    value = found.group(1)
    option = err.param.opts[0] if err.param.opts else err.param.name
    return f"error: {option}: {value!r} is not one of {', '.join(allowed)}{did_you_mean(value, allowed)}"
