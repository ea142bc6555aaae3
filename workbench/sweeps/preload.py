"""Imported once by the trial forkserver, so that every trial starts with its imports done.

`train.run` imports the data, model, objective and evaluation layers lazily;
importing them here (by the names train uses) saves each trial process several
seconds. Only a speed-up: a name that fails to import is skipped, and the trial
then imports (and reports) it itself.
"""

import importlib

_WARM = [
    ("workbench.train", "run"),
    ("workbench.data", "PretrainStream"),
    ("workbench.data", "load_tokenizer"),
    ("workbench.data.shapes", "generate"),
    ("workbench.models", "build_model"),
    ("workbench.objectives", "build_objectives"),
    ("workbench.evaluate", "evaluate_all"),
    ("mlflow", "MlflowClient"),
]

for _module, _name in _WARM:
    try:
        getattr(importlib.import_module(_module), _name)
    except Exception:  # noqa: BLE001 - warming is best effort; never break the forkserver
        pass
