"""Optuna user-attribute names of a sweep's study and trials: written and read by the sweep's
processes (coordinator, slots, SLURM workers, `--resume`), read by tests and progress displays.

One spelling per attribute, beside `tags.py` (the MLflow side), so a writer and its readers cannot
drift apart. The two trial attributes without the `workbench.` prefix (`seed`, `variant`) read as
plain parameters in Optuna's dashboard.
"""

PREFIX = "workbench."

# on each trial
SEED_ATTR = "seed"  # a trial's seed: a fixed user attribute (set when queued), not a searched parameter
VARIANT_ATTR = "variant"  # a grid trial's variant, also as a user attribute (set when queued)
WORKER_ATTR = f"{PREFIX}worker"  # {"host", "pid", "trial"} of the process running the trial (also on a claim study)
ERROR_ATTR = f"{PREFIX}error"  # why the trial failed (cleared when a retry takes it)
RUN_ATTR = f"{PREFIX}mlflow_run_id"  # the trial's MLflow child run
LOG_ATTR = f"{PREFIX}log"  # the child process's log file
PID_ATTR = f"{PREFIX}child_pid"  # the child process training the trial
# on the study
SWEEP_ATTR = f"{PREFIX}sweep"  # the sweep's name
FINGERPRINT_ATTR = f"{PREFIX}fingerprint"  # of the spec that made it: another spec may not resume it
PARENT_ATTR = f"{PREFIX}parent_run_id"  # the sweep's MLflow parent run (set last: waiting processes read it)
TRACKING_ATTR = f"{PREFIX}tracking_uri"
QUEUED_ATTR = f"{PREFIX}queued"  # the coordinator has queued the grid: workers may start
REPORT_ATTR = f"{PREFIX}report"  # where `workbench report ablations` puts the sweep's page (MLflow artifact)
JOBS_ATTR = f"{PREFIX}slurm_jobs"  # ids of the SLURM worker jobs submitted for it, in order
