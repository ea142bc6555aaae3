"""Reliability round 2 (issue 29), classes 1, 5, 6 and 12: what reaches sbatch, what `runs prune`
deletes, `workbench eval` on a bad checkpoint, and LaTeX from any name.

Each test feeds the hostile input through the real code (the CLI where it matters) and
checks the outcome: one line, exit code 2, nothing submitted, created or deleted that
should not be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import ConfigError
from workbench.launch import slurm as cluster
from workbench.launch import slurm_options

CPU = cluster.Partition("debug", nodes=1, gpus_per_node=0, time_limit="infinite", default=True)


# ------------------------------------------------------------------ 1. SLURM options
@pytest.mark.parametrize("mem, ok", [("16G", True), ("16000M", True), ("0", True), ("16GB", True), ("512", True),
                                     ("1.5G", False), ("-1", False), ("16G\ntouch pwned", False), ("16 G", False),
                                     ("16G;id", False), ("", False)])
def test_mem_follows_sbatch_grammar(mem, ok):
    resources = cluster.SlurmResources(mem=mem)
    if ok:
        slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
    else:
        with pytest.raises(ConfigError, match=r"^--mem .*: not a valid memory size"):
            slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")


@pytest.mark.parametrize("time, ok", [("30", True), ("30:00", True), ("4:00:00", True), ("2-00:00:00", True),
                                      ("1-12", True), ("1-12:30", True), ("UNLIMITED", True), ("1h", False),
                                      ("4:00:00\nrm -rf ~", False), ("4:00:00:00", False), ("$(id)", False)])
def test_time_follows_sbatch_grammar(time, ok):
    resources = cluster.SlurmResources(time=time)
    if ok:
        slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
    else:
        with pytest.raises(ConfigError, match=r"^--time .*: not a valid time limit"):
            slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")


def test_partition_cpus_and_gpus_are_checked_before_sinfo():
    for resources, message in [
        (cluster.SlurmResources(partition="gpu\n#SBATCH --uid=0"), "--partition 'gpu\\n#SBATCH --uid=0': not a valid partition name (letters, digits, _ . + -)"),
        (cluster.SlurmResources(cpus=0), "--cpus 0: must be >= 1"),
        (cluster.SlurmResources(gpus=-1), "--gpus -1: must be >= 0"),
    ]:
        with pytest.raises(ConfigError) as err:
            slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
        assert str(err.value) == message


@pytest.mark.parametrize("arg, message", [
    ("--wrap=touch pwned", "--wrap is not allowed"),
    ("--export=ALL,LD_PRELOAD=/tmp/x.so", "--export is not allowed"),
    ("--chdir=/tmp", "--chdir is not allowed"),
    ("--output=/etc/cron.d/x", "--output is not allowed"),
    ("--uid=0", "--uid is not allowed"),
    ("--get-user-env", "--get-user-env is not allowed"),
    ("--bb=stage_in", "--bb is not allowed"),
    ("--mem=1T", "workbench sets --mem itself; use workbench's --mem"),
    ("--time=1", "workbench sets --time itself; use workbench's --time"),
    ("--accont=vlp", "--accont is not allowed (only scheduling options that do not change what the job runs, as whom "
                     "or where) — did you mean '--account'?; allowed: --account, --qos,"),
    ("--account=vlp\nid", "not a valid --account value"),
    ("--account=vlp;id", "not a valid --account value"),
    ("--nodelist=/etc/hosts", "not a valid --nodelist value"),
    ("--hold=yes", "--hold takes no value"),
    ("--qos", "--qos needs a value"),
    ("--comment=one\ntwo", "not a valid --comment value"),
])
def test_sbatch_arg_takes_only_allowed_scheduling_options(arg, message):
    with pytest.raises(ConfigError) as err:
        cluster.sbatch_options([arg])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_allowed_sbatch_args_pass_with_their_values():
    assert cluster.sbatch_options(["--hold", "--account=vlp", "--qos=normal", "--constraint=a100&ib", "--exclusive",
                                   "--comment=round 2 (sweep)", "--dependency=afterok:12:13", "--nodelist=gpu[01-04]"]) == {
        "hold": True, "account": "vlp", "qos": "normal", "constraint": "a100&ib", "exclusive": True,
        "comment": "round 2 (sweep)", "dependency": "afterok:12:13", "nodelist": "gpu[01-04]"}


def test_options_reach_sbatch_as_arguments_and_the_script_holds_only_the_command(tmp_path):
    """The script submitit would write holds no #SBATCH line; each option is one sbatch argument,
    quotes and spaces included, with no shell in between."""
    resources = cluster.SlurmResources(mem="1G", time="5", extra=["--comment=it's a b", "--hold"])
    ex = cluster.executor(tmp_path / "jobs", resources, CPU, name="wb-sweep-x")
    script = ex._make_submission_file_text("python -u -m submitit.core._submit /x", "uid")
    assert "#SBATCH" not in script and script.splitlines()[-1].startswith("srun ")
    command = ex._make_submission_command(tmp_path / "job.sh")
    assert command[0] == "sbatch" and command[-1] == str(tmp_path / "job.sh")
    assert {"--comment=it's a b", "--hold", "--mem=1G", "--time=5", "--job-name=wb-sweep-x", "--partition=debug",
            f"--output={tmp_path / 'jobs'}/%j_0_log.out"} <= set(command[1:-1])


def test_a_job_name_or_folder_with_a_newline_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="the job name 'wb-sweep-a\\\\nid': contains a control character"):
        cluster.executor(tmp_path / "jobs", cluster.SlurmResources(), CPU, name="wb-sweep-a\nid")
    with pytest.raises(ConfigError, match="the job folder"):
        cluster.executor(tmp_path / "a\nb", cluster.SlurmResources(), CPU, name="wb-run")
    assert not (tmp_path / "a\nb").exists()


@pytest.mark.parametrize("args, message", [
    (["sweep", "scl", "--launcher", "slurm", "--mem", "1G\ntouch pwned"], "--mem '1G\\ntouch pwned': not a valid memory size"),
    (["sweep", "scl", "--launcher", "slurm", "--sbatch-arg=--wrap=touch pwned"], "--wrap is not allowed"),
    (["run", "--launcher", "slurm", "--time", "5\ntouch pwned"], "--time '5\\ntouch pwned': not a valid time limit"),
    (["run", "--launcher", "slurm", "--sbatch-arg=--export=ALL"], "--export is not allowed"),
    (["run", "--launcher", "slurm", "--cpus-per-task", "0"], "--cpus-per-task 0: must be >= 1"),
])
def test_the_cli_refuses_hostile_slurm_options_in_one_line_before_anything_runs(args, message, tmp_path, monkeypatch):
    """Checked before sbatch is even looked for: exit 2, one line, no study, no run, no file."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "--set", f"train.out_dir={tmp_path / 'out'}",
                                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == []
