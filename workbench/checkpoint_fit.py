"""Does a checkpoint fit the model its run's config builds? One line saying why not.

`workbench eval` loads a run's checkpoint into a model built from the run's recorded
config. A checkpoint of another model (other widths, other objectives), a garbage
file that unpickles to something else, or one without its `model` part made
`load_state_dict` raise a many-line RuntimeError -- after the evaluation's run had
been created, which was left FAILED. Here the checkpoint is loaded (torch's own
`load_state_dict` decides what fits) before any run exists, and a misfit is told as
counts and one example: missing keys, unexpected keys, shape mismatches.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from workbench.errors import ConfigError

PARTS = ("model", "objectives")  # what evaluation needs of a checkpoint (the optimizer is for resuming)


def load_parts(state: Any, modules: dict[str, nn.Module], where: str) -> int:
    """Load `state[part]` into each of `modules` ({"model": ..., "objectives": ...}); the checkpoint's
    step. ConfigError naming `where` (the checkpoint, never a scratch path) when it does not fit."""
    if not isinstance(state, dict) or any(not isinstance(state.get(part), dict) for part in modules):
        found = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise ConfigError(
            f"{where}: not a workbench checkpoint (expected the parts {', '.join(modules)}; found {found})"
        )
    for part, module in modules.items():
        problem = load_or_say_why_not(module, state[part])
        if problem:
            raise ConfigError(f"{where}: its {part} does not fit the model of the run's recorded config ({problem})")
    step = state.get("step")
    return step if isinstance(step, int) and step >= 0 else 0


def load_or_say_why_not(module: nn.Module, weights: dict[str, Any]) -> str:
    """Load `weights` into `module` and return ''; or, when they do not fit, say why (counts of
    missing, unexpected and mis-shaped keys, each with an example)."""
    own = module.state_dict()
    missing = [key for key in own if key not in weights]
    unexpected = [key for key in weights if key not in own]
    shapes = [
        f"{key} {tuple(getattr(weights[key], 'shape', ()))} vs {tuple(value.shape)}"
        for key, value in own.items()
        if key in weights and tuple(getattr(weights[key], "shape", (None,))) != tuple(value.shape)
    ]
    problems = [
        f"{len(found)} {what}, e.g. {found[0]}"
        for what, found in (
            ("missing key(s)", missing),
            ("unexpected key(s)", unexpected),
            ("shape mismatch(es)", shapes),
        )
        if found
    ]
    if problems:
        return "; ".join(problems)
    try:  # keys and shapes agree: torch decides the rest (non-tensor entries, ...)
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError, AttributeError) as err:
        return " ".join(str(err).split())[:200] or type(err).__name__
    return ""
