"""What a newcomer's `make test` does before the first test: the system packages the suite needs.

`.ci/system-packages` (run by `make test` first) installs missing Debian packages as root
and, without root, prints one line with the exact command and stops `make test` before
any test runs. Here the packages are hidden by a PATH that holds only a shell's basics.
"""

from __future__ import annotations

import os
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
    assert result.stdout.strip() == ("would run: apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                                     f"apt-get install -y -qq --no-install-recommends {ALL}")


def test_without_root_one_line_with_the_command_and_no_test_runs(bare_path):
    env = {"PATH": bare_path}
    alone = subprocess.run([*as_nobody(), "bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 1 and alone.stdout == "", alone
    (line,) = alone.stderr.splitlines()
    assert line.startswith(f"error: the tests need the system packages {ALL}; ")
    assert line.endswith("sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                         f"--no-install-recommends {ALL}'")

    make = subprocess.run([*as_nobody(), "make", "--no-print-directory", "-C", str(REPO), "test"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert make.returncode != 0 and line in make.stderr
    assert "pytest" not in make.stdout + make.stderr and "venv" not in make.stdout  # stopped before set-up and tests


def test_ci_only_calls_make_test():
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test" and not any("apt-get" in c for c in commands)
