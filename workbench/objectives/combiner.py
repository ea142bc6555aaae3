"""Build the objectives that are on, run them over one step, weight and sum their losses.

Generic over ``registry.OBJECTIVES``: each objective module declares whether it is
on, its config checks, the fusion passes it reads and how it is built
(``spec.ObjectiveSpec``), so this module names none of them. A term is built only
when on (dinov2 style): a term that is off has no module, no parameters, no loss
key and no fusion pass. Terms run in registry order; they share encodings and
fusion passes (merged by ``passes.plan``) through ``StepContext``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn

from workbench.config import ObjectivesConfig
from workbench.errors import ConfigError
from workbench.objectives.context import Recipe, StepContext
from workbench.objectives.passes import plan
from workbench.objectives.registry import OBJECTIVES
from workbench.objectives.spec import BuildInputs, ObjectiveSpec

REQUIRED_DIMS = ("vision_width", "text_width", "fusion_width")


def is_on(cfg: ObjectivesConfig, name: str) -> bool:
    """Whether objective ``name`` is built under ``cfg``."""
    return OBJECTIVES[name].is_on(getattr(cfg, name))


def _check(cfg: ObjectivesConfig, specs: list[ObjectiveSpec], inputs: BuildInputs) -> None:
    """Model sizes present, every declared dependency built, then each objective's own checks."""
    missing = [key for key in REQUIRED_DIMS if key not in inputs.dims]
    if missing:
        raise ValueError(f"build_objectives: dims lacks {missing} (needs {list(REQUIRED_DIMS)})")
    for spec in specs:
        _check_one(cfg, spec, inputs)


def _check_one(cfg: ObjectivesConfig, spec: ObjectiveSpec, inputs: BuildInputs) -> None:
    """One built objective: what it needs is built too, then its own `check` (ConfigError)."""
    for other, why in spec.needs.items():
        if other not in inputs.on:
            raise ConfigError(
                f"objectives.{spec.name}.enabled=true needs {other.upper()} ({why}) — "
                f"set objectives.{other}.enabled=true with objectives.{other}.weight > 0, "
                f"or objectives.{spec.name}.enabled=false"
            )
    spec.check(getattr(cfg, spec.name), inputs)


def config_problems(cfg: ObjectivesConfig, fusion_layers: int | None = None) -> list[str]:
    """Every objective rule a config breaks, one message each, without building anything:
    what `build_objectives` would refuse (warnings are left to the build)."""
    specs = [spec for spec in OBJECTIVES.values() if spec.is_on(getattr(cfg, spec.name))]
    inputs = BuildInputs({}, 0, {}, on=frozenset(s.name for s in specs), fusion_layers=fusion_layers)
    problems = []
    for spec in specs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _check_one(cfg, spec, inputs)
        except ConfigError as err:
            problems.append(str(err))
    return problems


def logged_metrics(cfg: ObjectivesConfig, *, every: bool = False) -> set[str]:
    """The `train/...` metric keys a run with these objectives logs (each spec's `metrics`);
    `every`: as if every objective were on."""
    keys = {"train/loss/total", "train/lr", "train/samples_per_s"}
    for spec in OBJECTIVES.values():
        section = getattr(cfg, spec.name)
        if every:  # its metrics under this config and under its defaults (every part of it on)
            keys |= {f"train/{key}" for key in spec.metrics(section) + spec.metrics(type(section)())}
        elif spec.is_on(section):
            keys |= {f"train/{key}" for key in spec.metrics(section)}
    return keys


class Objectives(nn.Module):
    """The built terms (one attribute per objective name, e.g. ``objectives.<name>.head``) and their weighted sum."""

    def __init__(self, terms: dict[str, nn.Module], recipes: dict[str, Recipe], special_ids: dict[str, int]) -> None:
        super().__init__()
        for name, term in terms.items():
            self.add_module(name, term)
        self.built = tuple(terms)
        self.recipes = recipes
        self.special_ids = dict(special_ids)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(name for term in self.built for name in getattr(self, term).names)

    def context(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> StepContext:
        modules = {name: getattr(self, name) for name in self.built}
        return StepContext(
            model, batch, self.recipes, special_ids=self.special_ids, generator=generator, modules=modules
        )

    def compute(self, ctx: StepContext) -> dict[str, Tensor]:
        """Run every built term on ``ctx``: raw, weighted and total losses plus metrics."""
        out: dict[str, Tensor] = {}
        total: Tensor | None = None
        for term_name in self.built:
            term = getattr(self, term_name)
            result = term(ctx)
            for name in term.names:
                raw = result.pop(f"{name}_loss")
                weighted = term.weight * raw
                out[f"loss/{name}"] = raw
                out[f"loss_weighted/{name}"] = weighted
                total = weighted if total is None else total + weighted
                prefix = f"{name}_"
                for key in [k for k in result if k.startswith(prefix)]:
                    out[f"{name}/{key[len(prefix) :]}"] = result.pop(key).detach().float()
            if result:
                raise KeyError(f"objective {term_name} returned unexpected keys {sorted(result)}")
        if total is None:
            total = torch.zeros((), device=ctx.device, requires_grad=True)
        out["loss"] = total
        return out

    def forward(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        return self.compute(self.context(model, batch, generator))


def build_objectives(
    cfg: ObjectivesConfig,
    dims: dict[str, int],
    special_ids: dict[str, int] | None = None,
    vocab_size: int | None = None,
    *,
    model: nn.Module | None = None,
    content_ids: list[int] | None = None,
    fusion_layers: int | None = None,
) -> Objectives:
    """The objectives that are on, for a model of sizes ``dims`` (``VLPModel.dims``).

    ``dims``: ``vision_width``, ``text_width``, ``fusion_width`` (+ optional
    ``joint_width``, default 2 x fusion width; ``vocab_size`` when not given apart).
    ``special_ids``: token ids never masked nor picked as Grad-CAM words, with
    ``"mask"`` the [MASK] id (e.g. ``{"pad": 0, "cls": 2, "sep": 3, "mask": 4}``).
    ``model``: for an objective that keeps a momentum copy of it (``BuildInputs.model``).
    ``content_ids``: the vocabulary's content-word ids (``content_words.content_token_ids``),
    the words a Grad-CAM prefers (``BuildInputs.content_ids``).
    ``fusion_layers``: ``model.fusion.layers``, for an objective's rules on a fusion layer.
    """
    special_ids = special_ids or {}
    vocab_size = dims.get("vocab_size", 0) if vocab_size is None else vocab_size
    specs = [spec for spec in OBJECTIVES.values() if spec.is_on(getattr(cfg, spec.name))]
    inputs = BuildInputs(
        dims,
        vocab_size,
        special_ids,
        model=model,
        content_ids=content_ids,
        on=frozenset(s.name for s in specs),
        fusion_layers=fusion_layers,
    )
    _check(cfg, specs, inputs)
    wiring = plan((spec.name, spec.passes(getattr(cfg, spec.name), inputs)) for spec in specs)
    inputs = replace(inputs, served_by=wiring.served_by)
    terms = {spec.name: spec.build(getattr(cfg, spec.name), inputs) for spec in specs}
    return Objectives(terms, wiring.passes, special_ids)
