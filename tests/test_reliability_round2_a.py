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
@pytest.mark.parametrize(
    "mem, ok",
    [
        ("16G", True),
        ("16000M", True),
        ("0", True),
        ("16GB", True),
        ("512", True),
        ("1.5G", False),
        ("-1", False),
        ("16G\ntouch pwned", False),
        ("16 G", False),
        ("16G;id", False),
        ("", False),
    ],
)
def test_mem_follows_sbatch_grammar(mem, ok):
    resources = cluster.SlurmResources(mem=mem)
    if ok:
        slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
    else:
        with pytest.raises(ConfigError, match=r"^--mem .*: not a valid memory size"):
            slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")


@pytest.mark.parametrize(
    "time, ok",
    [
        ("30", True),
        ("30:00", True),
        ("4:00:00", True),
        ("2-00:00:00", True),
        ("1-12", True),
        ("1-12:30", True),
        ("UNLIMITED", True),
        ("1h", False),
        ("4:00:00\nrm -rf ~", False),
        ("4:00:00:00", False),
        ("$(id)", False),
    ],
)
def test_time_follows_sbatch_grammar(time, ok):
    resources = cluster.SlurmResources(time=time)
    if ok:
        slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
    else:
        with pytest.raises(ConfigError, match=r"^--time .*: not a valid time limit"):
            slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")


def test_partition_cpus_and_gpus_are_checked_before_sinfo():
    for resources, message in [
        (
            cluster.SlurmResources(partition="gpu\n#SBATCH --uid=0"),
            "--partition 'gpu\\n#SBATCH --uid=0': not a valid partition name (letters, digits, _ . + -)",
        ),
        (cluster.SlurmResources(cpus=0), "--cpus 0: must be >= 1"),
        (cluster.SlurmResources(gpus=-1), "--gpus -1: must be >= 0"),
    ]:
        with pytest.raises(ConfigError) as err:
            slurm_options.check_resources(resources, gpu_option="--gpus", cpu_option="--cpus")
        assert str(err.value) == message


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--wrap=touch pwned", "--wrap is not allowed"),
        ("--export=ALL,LD_PRELOAD=/tmp/x.so", "--export is not allowed"),
        ("--chdir=/tmp", "--chdir is not allowed"),
        ("--output=/etc/cron.d/x", "--output is not allowed"),
        ("--uid=0", "--uid is not allowed"),
        ("--get-user-env", "--get-user-env is not allowed"),
        ("--bb=stage_in", "--bb is not allowed"),
        ("--mem=1T", "workbench sets --mem itself; use workbench's --mem"),
        ("--time=1", "workbench sets --time itself; use workbench's --time"),
        (
            "--accont=vlp",
            "--accont is not allowed (only scheduling options that do not change what the job runs, as whom "
            "or where) — did you mean '--account'?; allowed: --account, --qos,",
        ),
        ("--account=vlp\nid", "not a valid --account value"),
        ("--account=vlp;id", "not a valid --account value"),
        ("--nodelist=/etc/hosts", "not a valid --nodelist value"),
        ("--hold=yes", "--hold takes no value"),
        ("--qos", "--qos needs a value"),
        ("--comment=one\ntwo", "not a valid --comment value"),
    ],
)
def test_sbatch_arg_takes_only_allowed_scheduling_options(arg, message):
    with pytest.raises(ConfigError) as err:
        cluster.sbatch_options([arg])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_allowed_sbatch_args_pass_with_their_values():
    assert cluster.sbatch_options(
        [
            "--hold",
            "--account=vlp",
            "--qos=normal",
            "--constraint=a100&ib",
            "--exclusive",
            "--comment=round 2 (sweep)",
            "--dependency=afterok:12:13",
            "--nodelist=gpu[01-04]",
        ]
    ) == {
        "hold": True,
        "account": "vlp",
        "qos": "normal",
        "constraint": "a100&ib",
        "exclusive": True,
        "comment": "round 2 (sweep)",
        "dependency": "afterok:12:13",
        "nodelist": "gpu[01-04]",
    }


def test_options_reach_sbatch_as_arguments_and_the_script_holds_only_the_command(tmp_path):
    """The script submitit would write holds no #SBATCH line; each option is one sbatch argument,
    quotes and spaces included, with no shell in between."""
    resources = cluster.SlurmResources(mem="1G", time="5", extra=["--comment=it's a b", "--hold"])
    ex = cluster.executor(tmp_path / "jobs", resources, CPU, name="wb-sweep-x")
    script = ex._make_submission_file_text("python -u -m submitit.core._submit /x", "uid")
    assert "#SBATCH" not in script and script.splitlines()[-1].startswith("srun ")
    command = ex._make_submission_command(tmp_path / "job.sh")
    assert command[0] == "sbatch" and command[-1] == str(tmp_path / "job.sh")
    assert {
        "--comment=it's a b",
        "--hold",
        "--mem=1G",
        "--time=5",
        "--job-name=wb-sweep-x",
        "--partition=debug",
        f"--output={tmp_path / 'jobs'}/%j_0_log.out",
    } <= set(command[1:-1])


def test_a_job_name_or_folder_with_a_newline_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="the job name 'wb-sweep-a\\\\nid': contains a control character"):
        cluster.executor(tmp_path / "jobs", cluster.SlurmResources(), CPU, name="wb-sweep-a\nid")
    with pytest.raises(ConfigError, match="the job folder"):
        cluster.executor(tmp_path / "a\nb", cluster.SlurmResources(), CPU, name="wb-run")
    assert not (tmp_path / "a\nb").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["sweep", "scl", "--launcher", "slurm", "--mem", "1G\ntouch pwned"],
            "--mem '1G\\ntouch pwned': not a valid memory size",
        ),
        (["sweep", "scl", "--launcher", "slurm", "--sbatch-arg=--wrap=touch pwned"], "--wrap is not allowed"),
        (
            ["run", "--launcher", "slurm", "--time", "5\ntouch pwned"],
            "--time '5\\ntouch pwned': not a valid time limit",
        ),
        (["run", "--launcher", "slurm", "--sbatch-arg=--export=ALL"], "--export is not allowed"),
        (["run", "--launcher", "slurm", "--cpus-per-task", "0"], "--cpus-per-task 0: must be >= 1"),
    ],
)
def test_the_cli_refuses_hostile_slurm_options_in_one_line_before_anything_runs(args, message, tmp_path, monkeypatch):
    """Checked before sbatch is even looked for: exit 2, one line, no study, no run, no file."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        [*args, "--set", f"train.out_dir={tmp_path / 'out'}", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------ helpers: real tiny runs
def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _finished_run(shapes, uri: str, out: Path, *extra: str) -> str:
    from tiny_config import tiny_run

    from workbench import train
    from workbench.config import load_config

    return train.run(
        load_config("base", tiny_run(shapes, uri, out, "eval.tasks=[]", *extra, steps=2)), progress=False
    ).run_id


def _killed_run(shapes, uri: str, out: Path, checkpoint_file: Path | None, *extra: str) -> str:
    """A run left KILLED (as by a pre-emption) whose local last checkpoint is `checkpoint_file`
    (None: no checkpoint)."""
    import shutil

    from tiny_config import tiny_run

    from workbench import tracking
    from workbench.config import load_config

    tracker = tracking.start_run(load_config("base", tiny_run(shapes, uri, out, "eval.tasks=[]", *extra, steps=2)))
    tracker.finish("KILLED")
    if checkpoint_file is not None:
        (out / tracker.run_id).mkdir(parents=True)
        shutil.copy(checkpoint_file, out / tracker.run_id / "last.pt")
    return tracker.run_id


def _statuses(uri: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {
        r.info.run_id: r.info.status for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }


# ------------------------------------------------------------------ 5. runs prune
@pytest.mark.parametrize(
    "args, message",
    [
        (["--older-than", "nan"], "--older-than nan: must be a finite number of days >= 0"),
        (["--older-than", "inf"], "--older-than inf: must be a finite number of days >= 0"),
        (["--older-than", "-1"], "--older-than -1.0: must be a finite number of days >= 0"),
        (["--keep", "-1"], "--keep -1: must be >= 0"),
    ],
)
def test_prune_refuses_numbers_that_are_not_finite_and_non_negative(args, message, shapes_tiny, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _finished_run(shapes_tiny, uri, tmp_path / "out")  # seconds old: `nan` used to prune it
    from workbench import tracking

    stored = tracking.local_artifact_path(tracking.client(uri), run_id)
    assert stored is not None
    assert message in _one_line_error(
        _cli("runs", "prune", *args, "--out-dir", str(tmp_path / "out"), "--tracking-uri", uri)
    )
    assert stored.is_file() and "workbench.checkpoint_pruned" not in tracking.client(uri).get_run(run_id).data.tags


def test_keep_counts_runs_with_a_checkpoint_per_config_and_pruned_runs_say_so(shapes_tiny, tmp_path):
    """Two runs of one config, then a `workbench eval` run of the newer: --keep 1 keeps the newer
    run's checkpoint (the eval run has none and does not count) and prunes only the older; a run
    of another config keeps its own. Evaluating the pruned run then says when it was pruned, and
    creates no run."""
    from workbench import tracking

    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    older = _finished_run(shapes_tiny, uri, out)
    newer = _finished_run(shapes_tiny, uri, out)
    other = _finished_run(shapes_tiny, uri, out, "tracking.experiment=workbench")  # same experiment ...
    client = tracking.client(uri)
    client.set_tag(other, "workbench.experiment", "paper")  # ... another config (`-e paper`)
    evaluated = _cli(
        "eval", newer, "--set", "eval.batch_size=8", "--tracking-uri", uri, "--set", f"train.out_dir={out}"
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert len(_statuses(uri)) == 4  # + the eval run, the newest of the experiment

    done = _cli("runs", "prune", "--older-than", "0", "--keep", "1", "--out-dir", str(out), "--tracking-uri", uri)
    assert done.exit_code == 0 and "pruned the checkpoints of 1 run(s)" in done.output, done.output
    assert tracking.local_artifact_path(client, older) is None
    assert (
        tracking.local_artifact_path(client, newer) is not None
        and tracking.local_artifact_path(client, other) is not None
    )
    stamp = client.get_run(older).data.tags["workbench.checkpoint_pruned"]

    before = _statuses(uri)
    line = _one_line_error(_cli("eval", older, "--set", "eval.batch_size=8", "--tracking-uri", uri))
    assert f"run {older}: its checkpoint was pruned on {stamp} by `workbench runs prune`" in line
    assert f"workbench run --from {older}" in line and "Failed to download" not in line
    assert _statuses(uri) == before  # no eval run left behind
    drawn = _one_line_error(_cli("report", "attention", older, "--tracking-uri", uri, "--out", str(tmp_path / "r")))
    assert f"RUN_ID: run {older}: its checkpoint was pruned on {stamp}" in drawn and not (tmp_path / "r").exists()
    again = _cli("runs", "prune", "--older-than", "0", "--keep", "1", "--out-dir", str(out), "--tracking-uri", uri)
    assert again.exit_code == 0 and "no checkpoints to prune" in again.output  # idempotent


def test_resume_of_a_pruned_run_says_when_it_was_pruned(shapes_tiny, tmp_path):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    source = _finished_run(shapes_tiny, uri, tmp_path / "first")
    from workbench import tracking

    killed = _killed_run(shapes_tiny, uri, out, tracking.local_artifact_path(tracking.client(uri), source))
    done = _cli(
        "runs", "prune", "--older-than", "0", "--experiment", "workbench", "--out-dir", str(out), "--tracking-uri", uri
    )
    assert done.exit_code == 0 and not (out / killed).exists(), done.output
    line = _one_line_error(_cli("run", "--resume", killed, "--tracking-uri", uri))
    assert line.startswith(f"error: --resume: run {killed}: its checkpoint was pruned on ")
    assert _statuses(uri)[killed] == "KILLED"  # left as it was


# ------------------------------------------------------------------ 6. eval on a bad checkpoint
def test_eval_refuses_a_missing_garbage_or_other_model_checkpoint_before_any_run(shapes_tiny, tmp_path):
    from workbench import tracking

    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    good = tracking.local_artifact_path(tracking.client(uri), _finished_run(shapes_tiny, uri, tmp_path / "first"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04garbage, not a zip archive")
    import torch

    not_ours = tmp_path / "not_ours.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    cases = [
        (None, "no checkpoint in train.out_dir nor as its MLflow artifact checkpoints/last.pt"),
        (garbage, "cannot load checkpoint"),
        (not_ours, "not a workbench checkpoint (expected the parts model, objectives; found ['weights'])"),
        (good, "its model does not fit the model of the run's recorded config ("),  # trained at width 32, recorded 64
    ]
    for checkpoint_file, message in cases:
        run_id = _killed_run(shapes_tiny, uri, out, checkpoint_file, "model.vision.width=64", "model.vision.heads=4")
        for extra in ([], ["--set", "eval.batch_size=8"]):  # logged into the run itself / into a new eval run
            before = _statuses(uri)
            line = _one_line_error(_cli("eval", run_id, "--tracking-uri", uri, *extra))
            assert message in line and "RuntimeError" not in line and "/tmp" not in line.replace(str(tmp_path), ""), (
                line
            )
            assert _statuses(uri) == before, line  # no junk FAILED run, the source stays KILLED
    assert "shape mismatch(es), e.g. " in line
    assert not list(tmp_path.rglob("*.tmp*"))


# ------------------------------------------------------------------ 12. LaTeX from any name
HOSTILE_VARIANTS = [
    "baseline",
    "中文变体",
    "under_score",
    "50%",
    "a&b",
    "#1",
    "back\\slash",
    "up^",
    "ti~lde",
    "🚀 rocket",
    "[bracket]",
    "café crème",
    "α=0.5",
    "two\nlines",
    "{brace}",
    "$dollar$",
]


def test_latex_table_compiles_with_any_variant_metric_and_sweep_name(tmp_path):
    """CJK, emoji, newlines and every LaTeX special in variant, metric and sweep names: the table
    compiles with pdflatex (booktabs only), and each name is still there, told apart."""
    import shutil
    import subprocess

    from mlflow.tracking import MlflowClient
    from test_reports import log_sweep

    from workbench.reports.ablations import report_ablations

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("hostile", artifact_location=(tmp_path / "artifacts").as_uri())
    metrics = ["eval/检索/r_mean", "eval/vqa/acc_v2"]
    sweep = "abl_v2+x:y"  # sweep names are ASCII (reports.store.SELECTOR), specials included
    spec = {
        "name": sweep,
        "baseline": "baseline",
        "seeds": [0, 1],
        "metrics": metrics,
        "variants": [{"name": v, "overrides": {}} for v in HOSTILE_VARIANTS],
    }
    log_sweep(
        client,
        exp,
        spec,
        [
            (v, seed, {m: 40.0 + i + seed + j for j, m in enumerate(metrics)}, {}, "FINISHED")
            for i, v in enumerate(HOSTILE_VARIANTS)
            for seed in (0, 1)
        ],
    )
    result = report_ablations(
        [sweep], formats=["latex"], tracking_uri=uri, out=tmp_path / "out", with_figures=False, log_to_mlflow=False
    )
    table_tex = next((tmp_path / "out").rglob("ablations.tex")).read_text()
    assert len(result.sweeps[sweep].table.variants) == len(HOSTILE_VARIANTS)
    assert table_tex.isascii()  # pdflatex with any font encoding, no CJK package
    for spelled in (
        "{[}U+4E2D{]}",
        r"under\_score",
        r"50\%",
        r"a\&b",
        r"\#1",
        r"back\textbackslash{}slash",
        r"{[}U+1F680{]} rocket",
        r"caf\'{e} cr\`{e}me",
        r"$\alpha$=0.5",
        "two lines",
        r"\{brace\}",
        r"\$dollar\$",
    ):
        assert spelled in table_tex, spelled
    (tmp_path / "table.tex").write_text(table_tex)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{table.tex}\n\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (tmp_path / "paper.log").read_text(errors="replace")[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes().startswith(b"%PDF")


def test_tex_spells_every_character_in_latex2e_core():
    from workbench.reports.latex import tex

    assert tex("中") == "{[}U+4E2D{]}" and tex("🚀") == "{[}U+1F680{]}"
    assert tex("straße Øre ñ ő") == r"stra\ss{}e \O{}re \~{n} \H{o}"
    assert tex("ﬁ Ａ² µ Γ") == r"fi A2 $\mu$ $\Gamma$"
    assert tex("a\nb\tc\x00d") == "a b c d"
    assert tex("_%&#\\^~{}$") == r"\_\%\&\#\textbackslash{}\textasciicircum{}\textasciitilde{}\{\}\$"
