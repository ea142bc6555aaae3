"""What may reach `sbatch`: every SLURM option checked against its grammar before anything is submitted.

A value that reaches a job (``--mem``, ``--time``, ``--partition``, ``--sbatch-arg``)
could otherwise carry a command: a newline in ``--mem`` became a line of the job
script, and ``--sbatch-arg=--wrap=...`` replaced what the job runs. Here each value
must match the grammar sbatch's man page gives it (sizes, time limits, names, node
lists), and ``--sbatch-arg`` takes only scheduling options (``ALLOWED``) -- none that
changes what runs, as whom, where or with which environment (``--wrap``,
``--export``, ``--chdir``, ``--output``, ``--uid``, ``--get-user-env``, ...). The
options then travel as ``sbatch`` arguments, never as script text
(``sbatch_executor.py``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from workbench.errors import ConfigError, did_you_mean

if TYPE_CHECKING:  # the dataclass lives with the cluster it is checked against
    from workbench.launch.slurm import SlurmResources

# grammars (full matches), from sbatch(1)
MEM = r"(0|[1-9]\d{0,12})([KMGTkmgt][Bb]?)?"  # --mem=<size>[units]; 0 = all of a node's memory
# MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
TIME = r"\d{1,9}(:\d{1,2}){0,2}|\d{1,5}-\d{1,2}(:\d{1,2}){0,2}|(?i:unlimited|infinite)"
NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}"  # a partition, account, QOS, reservation, wckey
NAMES = rf"{NAME}(,{NAME})*"
INT = r"[1-9]\d{0,5}"
SIGNED_INT = r"[-+]?\d{1,9}"
HOSTS = r"[A-Za-z0-9_.,\[\]-]{1,1024}"  # node01,gpu[01-04] (not a file name: no '/')
FEATURES = r"[A-Za-z0-9_.,&|*\[\]:!()-]{1,1024}"  # constraint expressions: a100&ib, [rack1*2&rack2*4]
DATE = r"[A-Za-z0-9_:+.-]{1,64}"  # now+1hour, 2026-01-01T10:00:00, midnight
DEPENDENCY = r"[A-Za-z0-9_:,?+%-]{1,1024}"  # afterok:123:456, singleton, afterany:12_3
SPEC = r"[A-Za-z0-9_:,.=@%+-]{1,256}"  # gres, licenses, binding and frequency specs
MAIL_TYPES = (
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
)
TEXT = r"[^\x00-\x1f\x7f]{1,1024}"  # free text (a comment): printable, one line

FLAG = None  # an option that takes no value
# --sbatch-arg: scheduling options only, each with the grammar of its value (FLAG: none)
ALLOWED: dict[str, str | None] = {
    "account": NAME,
    "qos": NAME,
    "reservation": NAMES,
    "wckey": NAME,
    "clusters": NAMES,
    "mcs-label": NAME,
    "constraint": FEATURES,
    "prefer": FEATURES,
    "cluster-constraint": FEATURES,
    "nodelist": HOSTS,
    "exclude": HOSTS,
    "hold": FLAG,
    "requeue": FLAG,
    "no-requeue": FLAG,
    "contiguous": FLAG,
    "overcommit": FLAG,
    "spread-job": FLAG,
    "use-min-nodes": FLAG,
    "exclusive": r"user|mcs|topo",
    "oversubscribe": FLAG,
    "nice": SIGNED_INT,
    "priority": r"\d{1,9}|TOP",
    "mincpus": INT,
    "cpus-per-gpu": INT,
    "threads-per-core": INT,
    "sockets-per-node": INT,
    "cores-per-socket": INT,
    "ntasks-per-core": INT,
    "core-spec": r"\d{1,5}",
    "thread-spec": r"\d{1,5}",
    "delay-boot": r"\d{1,6}",
    "mem-per-cpu": MEM,
    "mem-per-gpu": MEM,
    "tmp": MEM,
    "time-min": TIME,
    "begin": DATE,
    "deadline": DATE,
    "dependency": DEPENDENCY,
    "kill-on-invalid-dep": r"yes|no",
    "mail-type": rf"({'|'.join(MAIL_TYPES)})(,({'|'.join(MAIL_TYPES)}))*",
    "mail-user": r"[A-Za-z0-9_.+-]{1,128}(@[A-Za-z0-9_.-]{1,255})?",
    "comment": TEXT,
    "gres": SPEC,
    "gres-flags": SPEC,
    "licenses": SPEC,
    "hint": r"[A-Za-z_]{1,32}",
    "distribution": r"[A-Za-z0-9_:,*]{1,64}",
    "gpu-bind": SPEC,
    "gpu-freq": SPEC,
    "cpu-freq": SPEC,
    "mem-bind": SPEC,
    "network": SPEC,
    "switches": r"\d{1,6}(@[\d:-]{1,16})?",
    "acctg-freq": SPEC,
    "profile": r"[A-Za-z,]{1,64}",
    "power": r"[A-Za-z_,]{1,64}",
    "wait-all-nodes": r"0|1",
}
# sbatch options workbench sets itself: the workbench option to use instead
OWN = {
    "partition": "--partition",
    "time": "--time",
    "mem": "--mem",
    "cpus-per-task": "--cpus-per-task / --cpus-per-trial",
    "gpus-per-node": "--gpus-per-node / --gpus-per-trial",
    "nodes": "--nodes",
    "ntasks-per-node": "--nproc",
}
# values may be optional for these (sbatch: --exclusive[=user|mcs], --nice[=adjustment])
OPTIONAL_VALUE = {"exclusive", "nice"}


def check_value(option: str, value: str, grammar: str, what: str) -> None:
    """`value` must fully match `grammar`; else one line naming the option, the value and what is allowed."""
    if re.fullmatch(grammar, value) is None:
        raise ConfigError(f"{option} {value!r}: not a valid {what}")


def check_resources(resources: SlurmResources, *, gpu_option: str, cpu_option: str) -> None:
    """Every value of `resources` against its grammar, before sinfo or sbatch sees any of it."""
    if resources.partition is not None:
        check_value("--partition", resources.partition, NAME, "partition name (letters, digits, _ . + -)")
    if resources.mem is not None:
        check_value(
            "--mem",
            resources.mem,
            MEM,
            "memory size (sbatch --mem: an integer with an optional unit K, M, G or T, e.g. 16G or 16000M)",
        )
    if resources.time is not None:
        check_value(
            "--time",
            resources.time,
            TIME,
            "time limit (sbatch --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. 4:00:00 or 2-00:00:00)",
        )
    if resources.gpus < 0:
        raise ConfigError(f"{gpu_option} {resources.gpus}: must be >= 0")
    if resources.cpus is not None and resources.cpus < 1:
        raise ConfigError(f"{cpu_option} {resources.cpus}: must be >= 1")
    sbatch_options(resources.extra)


def sbatch_options(extra: list[str]) -> dict[str, str | bool]:
    """`--sbatch-arg` values ('--account=abc', '--hold') as submitit's additional_parameters,
    each an allowed scheduling option with a valid value."""
    options: dict[str, str | bool] = {}
    for text in extra:
        match = re.fullmatch(r"--([A-Za-z][A-Za-z0-9-]*)(?:=(.*))?", text, flags=re.DOTALL)
        if match is None:
            raise ConfigError(
                f"--sbatch-arg {text!r}: give one sbatch option in its long form, e.g. --sbatch-arg=--account=abc"
            )
        name, value = match.group(1), match.group(2)
        if name in OWN:
            raise ConfigError(f"--sbatch-arg {text!r}: workbench sets --{name} itself; use workbench's {OWN[name]}")
        if name not in ALLOWED:
            hint = did_you_mean(f"--{name}", [f"--{n}" for n in ALLOWED], cutoff=0.8)
            raise ConfigError(
                f"--sbatch-arg {text!r}: --{name} is not allowed (only scheduling options that do not change what the "
                f"job runs, as whom or where){hint}; allowed: {', '.join('--' + n for n in ALLOWED)}"
            )
        grammar = ALLOWED[name]
        if value is None:
            if grammar is not FLAG and name not in OPTIONAL_VALUE:
                raise ConfigError(f"--sbatch-arg {text!r}: --{name} needs a value: --{name}=VALUE")
            options[name.replace("-", "_")] = True
            continue
        if grammar is FLAG:
            raise ConfigError(f"--sbatch-arg {text!r}: --{name} takes no value")
        check_value("--sbatch-arg", text, rf"--{re.escape(name)}=({grammar})", f"--{name} value")
        options[name.replace("-", "_")] = value
    return options


def check_argument(what: str, value: str) -> None:
    """The last guard before sbatch: no argument (job name, log path, ...) holds a control character."""
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ConfigError(f"{what} {value!r}: contains a control character (a newline, a tab, ...); choose another")
