"""ShapesWorld language: caption, question and statement phrasings, and the word list.

Phrasings are data (family -> list of format strings) so the vocabulary the
tokenizer needs is derived from them, never listed by hand twice. Captions only
name objects that are in the image, and only state relations/positions that hold.
Identifying captions name every object with its attributes and grid cell, so a
retrieval split whose scenes differ in `scene_key` has no caption shared by two images.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from workbench.data.shapes_scene import COLORS, MOTIONS, RELATIONS, SHAPES, SIZE_RADII, Obj, relations_between

NUMBERS = ("zero", "one", "two", "three", "four")
SIDES = ("left", "right")
AND = " and "  # joins listed objects and motion clauses

CAPTIONS: dict[str, list[str]] = {
    "attribute": ["a {sized}.", "there is a {sized}."],
    "attribute_that": ["a {size} {shape} that is {color}.", "a {shape} that is {color}."],
    "count": ["there are {n} shapes.", "an image with {n} shapes."],
    "count_one": ["there is one shape.", "an image with one shape."],
    "listing": ["{listing}."],
    "relation": ["the {a} is {rel} the {b}.", "a {a} {rel} a {b}."],
    "position": ["a {a} on the {place} of the image.", "the {a} is on the {place}."],
    "position_vertical": ["a {a} at the {place} of the image.", "the {a} is at the {place}."],
    "color_count": ["there are {n} {color} shapes."],
    "color_count_one": ["there is one {color} shape."],
    "described": ["{items}.", "there is {items}.", "an image with {items}."],
    "described_count": ["{n} {shapes}: {items}.", "an image with {n} {shapes}: {items}."],
}
# Families that name every object with its size, colour, shape and grid cell: such a
# caption identifies its image (retrieval val/test use only these; see `identifying_captions`).
IDENTIFYING = ("described", "described_count")
# Where an object is, by the thirds of the image its centre falls in: (row, column) -> phrase.
# Terse (no "at the"), so four described objects fit in data.max_text_len = 40 tokens.
GRID_PLACES = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "centre",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
MOTION_CLAUSES = {
    "moving": ["the {a} moves {direction}", "the {a} is moving {direction}"],
    "still": ["the {a} stays still", "the {a} does not move"],
}
VQA_QUESTIONS: dict[str, list[str]] = {
    "exists": ["is there a {a}?", "is there a {a} in the image?", "does the image contain a {a}?"],
    "relation": ["is the {a} {rel} the {b}?"],
    "color": ["what color is the {shape}?", "what is the color of the {shape}?"],
    "shape": ["what shape is the {color} object?", "which shape is {color}?"],
    "count": ["how many shapes are there?", "how many objects are in the image?"],
    "count_color": ["how many {color} shapes are there?", "how many {color} objects are there?"],
}
NLVR_STATEMENTS: dict[str, list[str]] = {
    "more": [
        "the {side} image has more shapes than the {other} image.",
        "there are more shapes in the {side} image than in the {other} image.",
    ],
    "side_contains": ["the {side} image contains a {a}.", "there is a {a} in the {side} image."],
    "both": ["both images contain a {a}.", "there is a {a} in both images."],
    "neither": ["neither image contains a {a}.", "there is no {a} in either image."],
    "side_relation": ["in the {side} image, the {a} is {rel} the {b}."],
}
VE_SENTENCES: dict[str, list[str]] = {
    "relation": ["the {a} is {rel} the {b}.", "a {a} is {rel} a {b}."],
    "attribute": ["the {shape} is {color}."],
    "size": ["the {a} is {size}."],
}
YES, NO = "yes", "no"
VE_LABELS = ("entailment", "neutral", "contradiction")


def pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def sized(obj: Obj) -> str:
    return f"{obj.size} {obj.color} {obj.shape}"


def horizontal_place(obj: Obj, px: int) -> str | None:
    """'left'/'right' when the centre is clearly in that part; symmetric under a flip."""
    centre = obj.x + 0.5
    if centre < px / 2 - px / 8:
        return "left"
    if centre > px / 2 + px / 8:
        return "right"
    return None


def vertical_place(obj: Obj, px: int) -> str | None:
    centre = obj.y + 0.5
    if centre < px / 2 - px / 8:
        return "top"
    if centre > px / 2 + px / 8:
        return "bottom"
    return None


def grid_cell(obj: Obj, px: int) -> tuple[int, int]:
    """(row, column) third of the image the object's centre is in."""
    return min(2, 3 * obj.y // px), min(2, 3 * obj.x // px)


def described(obj: Obj, px: int) -> str:
    """'a small red circle top left': everything that tells the object apart."""
    return f"a {sized(obj)} {GRID_PLACES[grid_cell(obj, px)]}"


def scene_key(objs: Sequence[Obj], px: int) -> frozenset:
    """What an identifying caption says about a scene: two scenes with equal keys share their captions."""
    return frozenset((o.size, o.color, o.shape, grid_cell(o, px)) for o in objs)


def _described_items(rng: np.random.Generator, objs: Sequence[Obj], px: int) -> str:
    names = [described(objs[i], px) for i in rng.permutation(len(objs)).tolist()]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + AND + names[-1]


def identifying_captions(rng: np.random.Generator, objs: Sequence[Obj], px: int, k: int = 5) -> list[str]:
    """`k` captions that each name every object (size, colour, shape, grid cell), in
    different phrasings and object orders: no other scene with a different `scene_key`
    can have any of them."""
    phrasings = [(family, p) for family in IDENTIFYING for p in CAPTIONS[family]]
    out: list[str] = []
    first = int(rng.integers(len(phrasings)))
    for attempt in range(4 * k):
        family, phrasing = phrasings[(first + attempt) % len(phrasings)]
        text = _identifying(family, phrasing, rng, objs, px)
        if text not in out or attempt >= 2 * k:
            out.append(text)
        if len(out) == k:
            return out
    raise RuntimeError("could not write identifying captions")  # pragma: no cover - 5 phrasings differ


def _identifying(family: str, phrasing: str, rng: np.random.Generator, objs: Sequence[Obj], px: int) -> str:
    items = _described_items(rng, objs, px)
    if family == "described":
        return phrasing.format(items=items)
    return phrasing.format(n=NUMBERS[len(objs)], shapes="shape" if len(objs) == 1 else "shapes", items=items)


def _listing(rng: np.random.Generator, objs: Sequence[Obj]) -> str:
    with_size = bool(rng.integers(2))
    order = rng.permutation(len(objs)).tolist()
    names = ["a " + (sized(objs[i]) if with_size else objs[i].name) for i in order]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + AND + names[-1]


def _caption(family: str, rng: np.random.Generator, objs: Sequence[Obj], px: int) -> str | None:
    """One caption of `family`, or None when the family does not apply to the scene."""
    phrasing = pick(rng, CAPTIONS[family])
    obj = objs[int(rng.integers(len(objs)))]
    if family == "attribute":
        return phrasing.format(sized=sized(obj))
    if family == "attribute_that":
        return phrasing.format(size=obj.size, shape=obj.shape, color=obj.color)
    if family == "count":
        return phrasing.format(n=NUMBERS[len(objs)]) if len(objs) > 1 else None
    if family == "count_one":
        return phrasing if len(objs) == 1 else None
    if family == "listing":
        return phrasing.format(listing=_listing(rng, objs))
    if family in IDENTIFYING:
        return _identifying(family, phrasing, rng, objs, px)
    if family == "relation":
        pairs = [(a, b, rel) for a in objs for b in objs if a is not b for rel in relations_between(a, b)]
        if not pairs:
            return None
        a, b, rel = pairs[int(rng.integers(len(pairs)))]
        return phrasing.format(a=a.name, b=b.name, rel=rel)
    if family in ("position", "position_vertical"):
        place_of = horizontal_place if family == "position" else vertical_place
        placed = [(o, place_of(o, px)) for o in objs if place_of(o, px)]
        if not placed:
            return None
        obj, place = placed[int(rng.integers(len(placed)))]
        return phrasing.format(a=obj.name, place=place)
    count = sum(o.color == obj.color for o in objs)
    if family == "color_count":
        return phrasing.format(n=NUMBERS[count], color=obj.color) if count > 1 else None
    if family == "color_count_one":
        return phrasing.format(color=obj.color) if count == 1 else None
    raise KeyError(family)  # pragma: no cover - CAPTIONS is closed


def captions(rng: np.random.Generator, objs: Sequence[Obj], px: int, k: int = 5) -> list[str]:
    """`k` captions from different families where the scene allows it."""
    out: list[str] = []
    for attempt in range(8):
        for family in rng.permutation(list(CAPTIONS)).tolist():
            text = _caption(family, rng, objs, px)
            if text and (text not in out or attempt >= 4):
                out.append(text)
            if len(out) == k:
                return out
    raise RuntimeError("could not write captions")  # pragma: no cover - families always apply


def video_caption(rng: np.random.Generator, objs: Sequence[Obj], motions: Sequence[str]) -> str:
    clauses = []
    for i in rng.permutation(len(objs)).tolist():
        kind = "still" if motions[i] == "still" else "moving"
        clauses.append(pick(rng, MOTION_CLAUSES[kind]).format(a=objs[i].name, direction=motions[i]))
    return AND.join(clauses) + "."


def vocabulary() -> list[str]:
    """Every word ShapesWorld text can contain (sorted), from the phrasings above."""
    texts: list[str] = []
    for table in (CAPTIONS, MOTION_CLAUSES, VQA_QUESTIONS, NLVR_STATEMENTS, VE_SENTENCES):
        for phrasings in table.values():
            texts += [re.sub(r"\{\w+\}", " ", p) for p in phrasings]
    texts += list(COLORS) + list(SHAPES) + list(SIZE_RADII) + list(NUMBERS) + list(SIDES)
    texts += list(RELATIONS) + list(MOTIONS) + ["top", "bottom", ",", AND, YES, NO, "shape"]
    texts += list(GRID_PLACES.values())
    return sorted({w for text in texts for w in re.findall(r"[a-z]+|[^\sa-z]", text)})


def answer_list() -> list[str]:
    """VQA answer vocabulary, in a fixed order."""
    return [YES, NO, *COLORS, *SHAPES, *NUMBERS]
