"""MLflow run tag names: written by training, sweeps and launchers, read by reports.

One spelling per tag, so a writer and its readers cannot drift apart. (Optuna study
and trial attributes are spelled once the same way, in `study_attrs.py`.)
"""

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

PREFIX = "workbench."

# every run
SEED = f"{PREFIX}seed"
DATA_HASH = f"{PREFIX}data_hash"
DEVICES = f"{PREFIX}devices"  # processes (ranks) that trained the run: reports' device-hours
DEVICE_KIND = f"{PREFIX}device"  # cpu | cuda | mps
GIT_COMMIT = f"{PREFIX}git_commit"
VERSION = f"{PREFIX}version."  # + package name
# `workbench run`
EXPERIMENT = f"{PREFIX}experiment"  # the experiment YAML a run was started from (`-e`)
OVERRIDES = f"{PREFIX}overrides"  # its `--set` overrides, space-separated
PRESET = f"{PREFIX}preset"  # `run --quick` / `--no-eval` (their overrides are in the config, not the tag)
RERUN_OF = f"{PREFIX}rerun_of"  # on a run started with `workbench run --from RUN_ID`
EVALUATED_FROM = (
    f"{PREFIX}evaluated_from"  # `workbench eval RUN_ID --set eval.*=...`: the run whose checkpoint it scored
)
CHECKPOINT_PRUNED = f"{PREFIX}checkpoint_pruned"  # date `workbench runs prune` removed the checkpoint
# sweeps: children and their parent
SWEEP = f"{PREFIX}sweep"
VARIANT = f"{PREFIX}variant"
TRIAL = f"{PREFIX}trial"
ROLE = f"{PREFIX}role"  # "sweep" on a sweep's parent run
SPEC = f"{PREFIX}spec"
BASELINE = f"{PREFIX}baseline"  # on the parent, when the sweep names its baseline
STORAGE = f"{PREFIX}storage"
REPORT = f"{PREFIX}report"  # local path of the sweep's report page
VERDICT = f"{PREFIX}verdict."  # + variant, on the parent: better | worse | equivalent | open | unresolved | baseline
SEEDS = f"{PREFIX}seeds."  # + variant, on the parent: its finished seeds
DESIGN = f"{PREFIX}design"  # on the parent: the test behind the verdicts, in words
# inside a SLURM job (launch/slurm_env.py)
SLURM_JOB_ID = f"{PREFIX}slurm_job_id"
SLURM_NODE = f"{PREFIX}slurm_node"
SLURM_RESTART = f"{PREFIX}slurm_restart"  # a resumed run: the job that resumed it
# MLflow's own
PARENT_RUN_ID = "mlflow.parentRunId"
DESCRIPTION = "mlflow.note.content"


# ------------------------------------------------------------- names inside metric keys
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. ]")  # MLflow keys allow these (and '/', which splits a key)


def key_parts(names: Iterable[str]) -> dict[str, str]:
    """Each name (a sweep's variants) as one segment of an MLflow metric key (the sweep parent's
    `summary/<metric>/<variant>/mean`): characters MLflow refuses become `_`. Where that makes two
    names one (`+scl` and `_scl`, two CJK names of one length), each name that changed gets a short
    hash of itself appended, so no variant's numbers overwrite another's."""
    names = list(dict.fromkeys(names))
    plain = {name: _KEY_UNSAFE.sub("_", name) for name in names}
    shared = Counter(plain.values())
    parts = {}
    for name, part in plain.items():
        clash = part != name and shared[part] > 1
        if clash or not part.strip(". "):  # '', '.', '..' would be no segment of a key path
            part = f"{part}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        parts[name] = part
    return parts
