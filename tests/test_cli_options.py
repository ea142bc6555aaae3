"""The CLI's shared pieces: option types declared once, one `Launcher`, one duration format, named exit codes."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench import cli_options, errors
from workbench.cli import app
from workbench.launch import Launcher
from workbench.progress import format_seconds

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "?"), (0.04, "0.0 s"), (42.25, "42.2 s"), (59.9, "59.9 s"), (60, "1:00"), (65.4, "1:05")]
    + [(3661, "1:01:01")],
)
def test_format_seconds_is_the_one_duration_format(seconds, shown):
    assert format_seconds(seconds) == shown


def test_a_sweep_slot_shows_its_elapsed_time_in_that_format():
    from workbench.sweeps.progress import SlotView, Snapshot, render

    view = SlotView("cpu0", trial=1, variant="mvsc", seed=0, started=0.0, phase="pre-training 3/10")
    snapshot = Snapshot("s", 0, 2, 0, [view], eta_s=None)
    lines = [str(line) for line in render(snapshot, now=75.0).renderables]
    assert "1:15" in lines[0] and lines[-1].endswith("ETA ?")


@pytest.mark.parametrize("command", [["run"], ["sweep", "scl"]])
def test_an_unknown_launcher_is_refused_in_one_line_naming_the_allowed_ones(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "--launcher", "slrum"])
    assert result.exit_code == errors.EXIT_USER_ERROR
    assert result.stderr.strip().splitlines() == [
        "error: --launcher: 'slrum' is not one of local, slurm — did you mean 'slurm'?"
    ]
    assert list(tmp_path.iterdir()) == []  # refused while parsing: no store, no data, no outputs


def test_the_launchers_are_the_enum_typer_offers():
    help_text = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).stdout
    assert [launcher.value for launcher in Launcher] == ["local", "slurm"]
    assert "<local|slurm>" in help_text


def test_exit_codes_are_the_ones_a_shell_reads():
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_USER_ERROR) == (0, 1, 2)
    assert errors.EXIT_INTERRUPTED == 128 + signal.SIGINT
    assert errors.exit_code(errors.ConfigError("x")) == errors.EXIT_USER_ERROR
    assert errors.exit_code(errors.RunError("x")) == errors.EXIT_FAILED


def test_every_declared_option_type_is_used_by_a_command():
    """cli_options holds the options of the commands in cli.py; one no command names is dead."""
    tree = ast.parse((ROOT / "workbench" / "cli.py").read_text())
    attributes = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    used = {node.attr for node in attributes if getattr(node.value, "id", "") == "opt"}
    declared = {name for name, kind in vars(cli_options).items() if name[0].isupper() and hasattr(kind, "__metadata__")}
    assert declared - used == set()
