"""The objectives a run can build: the one explicit list, in the order they run each step.

Adding an objective is its module (ending in ``SPEC = ObjectiveSpec(...)``, see
``spec.py``) plus one entry here; the combiner loops over this list and names none.
Order matters: terms run in it, so ITM draws its negatives before SoftMask draws its
random patches, and reordering changes what a seed draws.
"""

from __future__ import annotations

from workbench.objectives import itc, itm, mlm, scl, softmask
from workbench.objectives.spec import ObjectiveSpec

OBJECTIVES: dict[str, ObjectiveSpec] = {
    spec.name: spec for spec in (itc.SPEC, itm.SPEC, mlm.SPEC, scl.SPEC, softmask.SPEC)
}
