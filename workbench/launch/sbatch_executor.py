"""submitit's SlurmExecutor with every sbatch option on sbatch's command line, none in the script.

submitit writes each option as an ``#SBATCH --key=value`` line of the job script;
a value holding a newline would become a command the job runs. Here the options
submitit would write are moved to the ``sbatch`` argument list (one argument each,
no shell), and the script keeps only the command. sbatch gives command-line options
precedence over ``#SBATCH`` lines and keeps them in the job record, so a requeued
job runs with the same ones.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import submitit

from workbench.launch.slurm_options import check_argument

DIRECTIVE = "#SBATCH "


def split_directives(script: str) -> tuple[str, list[str]]:
    """(the script without its #SBATCH lines, those lines' options as sbatch arguments)."""
    kept, arguments = [], []
    for line in script.split("\n"):
        if line.startswith(DIRECTIVE):
            words = shlex.split(line[len(DIRECTIVE) :])
            if len(words) != 1 or not words[0].startswith("--"):
                raise ValueError(f"unexpected sbatch directive in submitit's script: {line!r}")
            check_argument("sbatch option", words[0])
            arguments.append(words[0])
        else:
            kept.append(line)
    return "\n".join(kept), arguments


class ArgvSlurmExecutor(submitit.SlurmExecutor):
    """Submits with `sbatch --opt=value ... script`; the script holds no #SBATCH line."""

    _sbatch_arguments: list[str] = []

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        script, self._sbatch_arguments = split_directives(super()._make_submission_file_text(command, uid))
        return script

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return ["sbatch", *self._sbatch_arguments, str(submission_file_path)]
