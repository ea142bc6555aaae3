"""ShapesWorld downstream tasks: VQA, NLVR and VE samples with the scenes they need.

Language priors are removed by construction: every yes/no question and every NLVR
statement is written twice with the same text, once over scenes where it is true
and once where it is false; every VE sentence three times (entailment, neutral,
contradiction). A text-only model therefore sits exactly at chance on them.
Scenes are generated to fit the text (constrained sampling), so balance never
depends on finding a matching image by luck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.data.shapes_language import (
    NLVR_STATEMENTS,
    NO,
    NUMBERS,
    SIDES,
    VE_SENTENCES,
    VQA_QUESTIONS,
    YES,
    pick,
)
from workbench.data.shapes_scene import COLORS, RELATIONS, SHAPES, Obj, Want, sample_scene

MAX_OBJECTS = 4
VQA_MIX = {"exists": 0.25, "relation": 0.25, "color": 0.125, "shape": 0.125, "count": 0.125, "count_color": 0.125}
NLVR_MIX = {"more": 0.2, "side_contains": 0.2, "both": 0.2, "neither": 0.2, "side_relation": 0.2}
VE_MIX = {"relation": 0.4, "attribute": 0.3, "size": 0.3}


@dataclass
class TaskSample:
    """One JSON entry before image files exist: its fields and the scene(s) to render."""

    fields: dict[str, Any]
    scenes: list[list[Obj]]


def _family(rng: np.random.Generator, mix: dict[str, float]) -> str:
    names = list(mix)
    return names[int(rng.choice(len(names), p=np.array(list(mix.values()))))]


def _combos(rng: np.random.Generator, k: int) -> list[Want]:
    """`k` distinct (colour, shape) objects."""
    every = [(c, s) for c in COLORS for s in SHAPES]
    picked = rng.choice(len(every), size=k, replace=False)
    return [Want(color=every[i][0], shape=every[i][1]) for i in picked]


def _name(want: Want) -> str:
    return f"{want.color} {want.shape}"


def _not(want: Want):
    return lambda color, shape: (color, shape) != (want.color, want.shape)


def _scene(rng: np.random.Generator, px: int, wants=(), allowed=None, relation=None, n=None) -> list[Obj]:
    """A scene with the wants plus a random number of distractors (total 1..MAX_OBJECTS)."""
    low = max(len(wants), 1)
    n = n if n is not None else int(rng.integers(low, MAX_OBJECTS + 1))
    kwargs = {"allowed": allowed} if allowed else {}
    return sample_scene(rng, px, n, wants, relation=relation, **kwargs)


# --------------------------------------------------------------------------- VQA
def vqa_unit(rng: np.random.Generator, px: int) -> list[TaskSample]:
    """One open question, or a yes/no question twice (a 'yes' scene and a 'no' scene)."""
    template = _family(rng, VQA_MIX)
    phrasing = pick(rng, VQA_QUESTIONS[template])

    def sample(question: str, answer: str, scene: list[Obj]) -> TaskSample:
        return TaskSample({"question": question, "answer": [answer], "template": template}, [scene])

    if template == "exists":
        (want,) = _combos(rng, 1)
        question = phrasing.format(a=_name(want))
        return [
            sample(question, YES, _scene(rng, px, [want])),
            sample(question, NO, _scene(rng, px, allowed=_not(want))),
        ]
    if template == "relation":
        a, b = _combos(rng, 2)
        rel = pick(rng, list(RELATIONS))
        question = phrasing.format(a=_name(a), b=_name(b), rel=rel)
        return [
            sample(question, YES, _scene(rng, px, [a, b], relation=rel)),
            sample(question, NO, _scene(rng, px, [a, b], relation=RELATIONS[rel])),
        ]
    if template == "color":
        (want,) = _combos(rng, 1)
        scene = _scene(rng, px, [want], allowed=lambda color, shape: shape != want.shape)
        return [sample(phrasing.format(shape=want.shape), want.color, scene)]
    if template == "shape":
        (want,) = _combos(rng, 1)
        scene = _scene(rng, px, [want], allowed=lambda color, shape: color != want.color)
        return [sample(phrasing.format(color=want.color), want.shape, scene)]
    if template == "count":
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        return [sample(phrasing, NUMBERS[n], _scene(rng, px, n=n))]
    # count_color: exactly `count` objects of one colour (0..3), any number of others
    color = pick(rng, list(COLORS))
    count = int(rng.integers(0, MAX_OBJECTS))
    wants = [Want(color=color)] * count
    scene = _scene(rng, px, wants, allowed=lambda c, shape: c != color)
    return [sample(phrasing.format(color=color), NUMBERS[count], scene)]


# -------------------------------------------------------------------------- NLVR
def nlvr_unit(rng: np.random.Generator, px: int) -> list[TaskSample]:
    """One statement twice: over a pair of scenes where it is true and a pair where it is false."""
    family = _family(rng, NLVR_MIX)
    phrasing = pick(rng, NLVR_STATEMENTS[family])
    side = pick(rng, SIDES)
    other = SIDES[1 - SIDES.index(side)]

    def by_side(stated: list[Obj], unstated: list[Obj]) -> list[list[Obj]]:
        return [stated, unstated] if side == "left" else [unstated, stated]

    if family == "more":
        many = int(rng.integers(2, MAX_OBJECTS + 1))
        few = int(rng.integers(1, many))
        text = phrasing.format(side=side, other=other)
        true = by_side(_scene(rng, px, n=many), _scene(rng, px, n=few))
        false = by_side(_scene(rng, px, n=few), _scene(rng, px, n=many))
    elif family == "side_relation":
        a, b = _combos(rng, 2)
        rel = pick(rng, list(RELATIONS))
        text = phrasing.format(side=side, a=_name(a), b=_name(b), rel=rel)
        holds = lambda: _scene(rng, px, [a, b], relation=rel)  # noqa: E731
        fails = lambda: _scene(rng, px, [a, b], relation=RELATIONS[rel])  # noqa: E731
        true = by_side(holds(), fails())
        false = by_side(fails(), holds())
    else:
        (want,) = _combos(rng, 1)
        text = phrasing.format(side=side, a=_name(want))
        has = lambda: _scene(rng, px, [want])  # noqa: E731
        lacks = lambda: _scene(rng, px, allowed=_not(want))  # noqa: E731
        if family == "side_contains":
            true, false = by_side(has(), lacks()), by_side(lacks(), has())
        else:
            one_side = [has(), lacks()] if rng.integers(2) else [lacks(), has()]
            if family == "both":
                true, false = [has(), has()], one_side
            else:  # neither
                true, false = [lacks(), lacks()], one_side
    return [
        TaskSample({"sentence": text, "label": "True"}, true),
        TaskSample({"sentence": text, "label": "False"}, false),
    ]


# ---------------------------------------------------------------------------- VE
def ve_unit(rng: np.random.Generator, px: int) -> list[TaskSample]:
    """One sentence three times: an entailing, a neutral and a contradicting scene."""
    family = _family(rng, VE_MIX)
    phrasing = pick(rng, VE_SENTENCES[family])
    if family == "relation":
        a, b = _combos(rng, 2)
        rel = pick(rng, list(RELATIONS))
        text = phrasing.format(a=_name(a), b=_name(b), rel=rel)
        kept, missing = (a, b) if rng.integers(2) else (b, a)
        scenes = {
            "entailment": _scene(rng, px, [a, b], relation=rel),
            "neutral": _scene(rng, px, [kept], allowed=_not(missing)),
            "contradiction": _scene(rng, px, [a, b], relation=RELATIONS[rel]),
        }
    elif family == "attribute":
        shape = pick(rng, SHAPES)
        color, wrong = (list(COLORS)[i] for i in rng.choice(len(COLORS), size=2, replace=False))
        text = phrasing.format(shape=shape, color=color)
        only_one = lambda c, s: s != shape  # noqa: E731
        scenes = {
            "entailment": _scene(rng, px, [Want(color, shape)], allowed=only_one),
            "neutral": _scene(rng, px, allowed=only_one),
            "contradiction": _scene(rng, px, [Want(wrong, shape)], allowed=only_one),
        }
    else:  # size
        (want,) = _combos(rng, 1)
        size, wrong = ("small", "large") if rng.integers(2) else ("large", "small")
        text = phrasing.format(a=_name(want), size=size)
        scenes = {
            "entailment": _scene(rng, px, [Want(want.color, want.shape, size)]),
            "neutral": _scene(rng, px, allowed=_not(want)),
            "contradiction": _scene(rng, px, [Want(want.color, want.shape, wrong)]),
        }
    return [
        TaskSample({"sentence": text, "label": label}, [scenes[label]])
        for label in ("entailment", "neutral", "contradiction")
    ]
