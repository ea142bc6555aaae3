"""Pre-training objectives (ITC, ITM, MLM, SCL's MVSC/MLSC, SoftMask), each its own module.

``build_objectives(cfg.objectives, model.dims, special_ids_of(tokenizer))`` builds only the
ones that are on (``registry.OBJECTIVES``); ``Objectives.forward(model, batch)`` returns raw,
weighted and total losses.
"""

from workbench.objectives.combiner import Objectives, build_objectives, is_on
from workbench.objectives.context import StepContext, special_ids_of
from workbench.objectives.registry import OBJECTIVES

__all__ = ["OBJECTIVES", "Objectives", "StepContext", "build_objectives", "is_on", "special_ids_of"]
