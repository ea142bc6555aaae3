"""What a newcomer's `make test` does before the first test: the system packages the suite needs.

`.ci/system-packages` (run by `make test` first) installs missing Debian packages as root
and, without root, prints one line with the exact command and stops `make test` before
any test runs. Here the packages are hidden by a PATH that holds only a shell's basics.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "system-packages"
ALL = "slurm-wlm munge texlive-latex-base texlive-latex-recommended chromium poppler-utils"
BASICS = ("bash", "env", "make", "sh")


@pytest.fixture
def bare_path():
    """A PATH with a shell, `env` and `make` and none of the packages' programs (readable by nobody)."""
    with tempfile.TemporaryDirectory(prefix="bare-path-") as tmp:
        bin_dir = Path(tmp)
        bin_dir.chmod(0o755)
        for name in BASICS:
            (bin_dir / name).symlink_to(shutil.which(name))
        yield str(bin_dir)


def as_nobody() -> list[str]:
    """A prefix that runs a command without root (empty when this process is not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot drop root to check the non-root path")
    return [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_nothing_to_do_when_every_package_is_there():
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == result.stderr == "", result  # the suite runs: they are here


def test_as_root_it_installs_every_missing_package_with_apt_get(bare_path):
    if os.geteuid() != 0:
        pytest.skip("the root path (apt-get) needs root")
    env = {"PATH": bare_path, "SYSTEM_PACKAGES_DRY_RUN": "1"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    assert result.stdout.strip() == (
        "would run: apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y -qq --no-install-recommends {ALL}"
    )


def test_without_root_one_line_with_the_command_and_no_test_runs(bare_path):
    env = {"PATH": bare_path}
    alone = subprocess.run([*as_nobody(), "bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 1 and alone.stdout == "", alone
    (line,) = alone.stderr.splitlines()
    assert line.startswith(f"error: the tests need the system packages {ALL}; ")
    assert line.endswith(
        "sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        f"--no-install-recommends {ALL}'"
    )

    make = subprocess.run(
        [*as_nobody(), "make", "--no-print-directory", "-C", str(REPO), "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert make.returncode != 0 and line in make.stderr
    assert "pytest" not in make.stdout + make.stderr and "venv" not in make.stdout  # stopped before set-up and tests


def test_ci_only_calls_make_test():
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test" and not any("apt-get" in c for c in commands)


# ------------------------------------------------------------- progress off a terminal
@pytest.fixture
def log_console(monkeypatch):
    """progress writes to a file-like log (not a terminal), a plain line every 50 ms."""
    import io

    from rich.console import Console

    from workbench import progress

    log = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=log, force_terminal=False, width=200, highlight=False))
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.05)
    return log


def _wait_for(log, text: str, timeout_s: float = 10.0) -> str:
    import time

    deadline = time.monotonic() + timeout_s
    while text not in log.getvalue():
        assert time.monotonic() < deadline, log.getvalue()
        time.sleep(0.01)
    return log.getvalue()


def test_a_phase_in_a_log_prints_its_count_rate_and_eta(log_console):
    import re

    from workbench import progress

    with progress.phase("pre-training", total=20, loss="loss -") as task:
        task.update(0)
        task.update(5, loss="loss 3.1000")
        line = [text for text in _wait_for(log_console, "pre-training: 5/20 steps").splitlines() if "5/20" in text][-1]
    rate, eta = re.fullmatch(r"pre-training: 5/20 steps, ([\d.]+) steps/s, ETA (.+) \(loss 3.1000\)", line).groups()
    seconds = (
        float(eta.removesuffix(" s"))
        if eta.endswith(" s")
        else sum(int(part) * 60**i for i, part in enumerate(reversed(eta.split(":"))))
    )
    assert seconds == pytest.approx(15 / float(rate), rel=0.1, abs=0.1)  # the 15 steps left at this rate
    with progress.phase("data generation"):  # no count: still shows it is alive
        _wait_for(log_console, "data generation: running, ")
    assert log_console.getvalue().rstrip().splitlines()[-1].startswith("data generation: done in ")


def test_on_a_terminal_the_bar_shows_progress_and_no_plain_lines(log_console, monkeypatch):
    import time

    from rich.console import Console

    from workbench import progress

    monkeypatch.setattr(progress, "_console", Console(file=log_console, force_terminal=True, width=200))
    with progress.phase("pre-training", total=20) as task:
        task.update(5)
        time.sleep(0.3)
    assert "5/20 steps," not in log_console.getvalue()


def test_the_warm_start_announces_its_expected_time(shapes_tiny, tmp_path, log_console):
    from test_warmstart import cfg_for

    from workbench.data import load_tokenizer
    from workbench.warmstart import ensure

    shutil.copytree(shapes_tiny, tmp_path / "data")
    cfg = cfg_for(tmp_path / "data", **{"model.vision.init": "warmstart", "warmstart.vision_steps": 4})
    said = []
    ensure(cfg, load_tokenizer(cfg.data), progress=True, announce=said.append)
    assert "training them once (4 steps" in said[0]
    assert re.search(
        r"warm start \(vision\): about [\d.]+ s for 4 steps \([\d.]+ s/step over the first 3; made once",
        log_console.getvalue(),
    ), log_console.getvalue()


# ------------------------------------------------------------------ a quick run
def test_quick_uses_a_cached_vit_warm_start_and_skips_a_missing_one(tmp_path):
    from workbench.cli_support import quick_overrides
    from workbench.config import load_config
    from workbench.run_command import skip_missing_warm_start
    from workbench.warmstart import cached_path

    said = []
    quick = load_config("base", quick_overrides(True, False, [f"data.root={tmp_path}"]))
    assert quick.model.vision.init == "warmstart"
    assert skip_missing_warm_start(quick, [], said.append) and quick.model.vision.init == "random"
    (line,) = said
    assert line.startswith("--quick: no cached ViT warm start (") and "model.vision.init=random" in line

    cached = load_config("base", quick_overrides(True, False, [f"data.root={tmp_path}"]))
    cached_path(cached, "vision").parent.mkdir(parents=True)
    cached_path(cached, "vision").write_bytes(b"made by an earlier run")
    assert not skip_missing_warm_start(cached, [], said.append) and cached.model.vision.init == "warmstart"

    asked = load_config("base", [f"data.root={tmp_path / 'empty'}", "model.vision.init=warmstart"])
    assert not skip_missing_warm_start(asked, ["model.vision.init=warmstart"], said.append)  # --set wins
    assert asked.model.vision.init == "warmstart" and len(said) == 1
