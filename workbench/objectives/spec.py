"""What an objective module declares, so the combiner can build it without naming it.

Each objective module ends with ``SPEC = ObjectiveSpec(...)`` and ``registry.OBJECTIVES``
lists them. Every callable receives the objective's own config section
(``cfg.objectives.<name>``): an objective reads no other objective's config, and
what it needs from the others is declared (``needs``) or read from ``BuildInputs.on``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from workbench.objectives.passes import FusionPass


@dataclass(frozen=True)
class BuildInputs:
    """What checking, planning and building an objective may read besides its config section."""

    dims: Mapping[str, int]  # VLPModel.dims: vision_width, text_width, fusion_width (+ joint_width)
    vocab_size: int
    special_ids: Mapping[str, int]  # token ids never masked; "mask" is the [MASK] id
    model: nn.Module | None = None  # ITC's momentum copy is made from it
    content_ids: list[int] | None = None  # content-word ids (SoftMask's Grad-CAM words)
    on: frozenset[str] = frozenset()  # every objective built in this run
    served_by: Mapping[str, str] = field(default_factory=dict)  # set after planning (passes.PassPlan)
    fusion_layers: int | None = None  # model.fusion.layers (None: unknown, rules on it are not checked)

    @property
    def mask_id(self) -> int:
        """The [MASK] id, -1 when the vocabulary has none (a masked-text pass then refuses to build)."""
        return self.special_ids.get("mask", -1)

    def pass_name(self, requested: str) -> str:
        """The pass that serves a request made under ``requested`` (MLM's may be MLSC's)."""
        return self.served_by.get(requested, requested)


def weighted_on(section: Any) -> bool:
    """The common toggle: enabled and weight > 0 (a term of weight 0 is not built, dinov2 style)."""
    return section.enabled and section.weight > 0


def no_passes(section: Any, inputs: BuildInputs) -> dict[str, FusionPass]:
    return {}


def no_check(section: Any, inputs: BuildInputs) -> None:
    return None


def term_metrics(name: str, *extra: str) -> tuple[str, ...]:
    """The `train/...` keys one loss term logs (``combiner.Objectives.compute``): its raw and
    weighted loss, and ``<name>/<extra>`` for each extra value its forward returns."""
    return (f"loss/{name}", f"loss_weighted/{name}", *(f"{name}/{key}" for key in extra))


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective's whole wiring. ``name`` is its config section and its loss module's attribute."""

    name: str
    build: Callable[[Any, BuildInputs], nn.Module]  # the loss module (has ``weight``, ``names``, ``forward(ctx)``)
    passes: Callable[[Any, BuildInputs], dict[str, FusionPass]] = no_passes  # the fusion passes it reads
    is_on: Callable[[Any], bool] = weighted_on  # built at all?
    check: Callable[[Any, BuildInputs], None] = no_check  # raise ConfigError (or warn) on a bad combination
    needs: Mapping[str, str] = field(default_factory=dict)  # objective it cannot run without -> why
    metrics: Callable[[Any], tuple[str, ...]] = lambda section: ()  # what it logs under train/ (``term_metrics``)
