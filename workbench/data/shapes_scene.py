"""ShapesWorld scenes: sample non-overlapping objects under constraints, render them.

A scene is a list of `Obj` (shape, colour, size word, centre, half-extent). Every
object in a scene has a distinct (colour, shape), so "the red circle" always names
exactly one object. Relations use the objects' boxes with no overlap on that axis
("left of" = entirely to the left), so a flipped image swaps left/right exactly.
Rendering is PIL without anti-aliasing: an object's mask is exactly its pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

# The data set's definition (versioned with the generator), not run settings.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 210),
    "cyan": (40, 210, 215),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZE_RADII = {"small": (4, 6), "large": (8, 11)}  # half-extent in px for a 64 px image
BACKGROUND = (28, 28, 28)
GAP = 2  # px of free space kept between any two objects
CANDIDATES = 60  # random positions tried per object before the scene is redrawn
RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    x: int  # centre column
    y: int  # centre row
    r: int  # half-extent: the object lies within [x-r, x+r] x [y-r, y+r]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        """[x0, y0, x1, y1) of the object's extent (end exclusive)."""
        return (self.x - self.r, self.y - self.r, self.x + self.r + 1, self.y + self.r + 1)


@dataclass(frozen=True)
class Want:
    """A required object; None = any value (distinct from the scene's other objects)."""

    color: str | None = None
    shape: str | None = None
    size: str | None = None


def holds(a: Obj, b: Obj, relation: str) -> bool:
    """Whether `a <relation> b`, with no overlap of the two boxes along that axis."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return {
        "left of": ax1 <= bx0,
        "right of": bx1 <= ax0,
        "above": ay1 <= by0,
        "below": by1 <= ay0,
    }[relation]


def relations_between(a: Obj, b: Obj) -> list[str]:
    return [rel for rel in RELATIONS if holds(a, b, rel)]


def _apart(a: Obj, b: Obj) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


def _attributes(
    rng: np.random.Generator,
    wants: Sequence[Want],
    taken: set[tuple[str, str]],
    allowed: Callable[[str, str], bool] = lambda color, shape: True,
) -> list[tuple[str, str, str]] | None:
    """Fill unspecified colour/shape/size of each want, keeping (colour, shape) unique."""
    out = []
    for want in wants:
        options = [
            (c, s)
            for c in ([want.color] if want.color else COLORS)
            for s in ([want.shape] if want.shape else SHAPES)
            if (c, s) not in taken and allowed(c, s)
        ]
        if not options:
            return None
        color, shape = options[rng.integers(len(options))]
        taken.add((color, shape))
        size = want.size or ("small", "large")[rng.integers(2)]
        out.append((color, shape, size))
    return out


def sample_scene(
    rng: np.random.Generator,
    px: int,
    n_objects: int,
    wants: Sequence[Want] = (),
    allowed: Callable[[str, str], bool] = lambda color, shape: True,
    relation: str | None = None,
    tries: int = 200,
) -> list[Obj]:
    """`n_objects` objects: first the `wants` (in order), then random distractors whose
    (colour, shape) passes `allowed` (the wants need not). With `relation`, object 0
    <relation> object 1."""
    assert n_objects >= len(wants), (n_objects, wants)
    scale = px / 64
    for _ in range(tries):
        taken: set[tuple[str, str]] = set()
        attrs = _attributes(rng, wants, taken)
        extra = _attributes(rng, [Want()] * (n_objects - len(wants)), taken, allowed)
        if attrs is None or extra is None:
            raise ValueError(f"no objects satisfy the constraints {wants}")
        placed: list[Obj] = []
        for color, shape, size in attrs + extra:
            low, high = SIZE_RADII[size]
            r = int(round(rng.integers(low, high + 1) * scale))
            for x, y in rng.integers(r + 1, px - r - 1, size=(CANDIDATES, 2)).tolist():
                obj = Obj(shape, color, size, x, y, r)
                if all(_apart(obj, other) for other in placed):
                    if relation and len(placed) == 1 and not holds(placed[0], obj, relation):
                        continue
                    placed.append(obj)
                    break
            else:
                break
        if len(placed) == n_objects:
            return placed
    raise RuntimeError(f"could not place {n_objects} objects in {px} px after {tries} tries")


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, fill) -> None:
    x, y, r = obj.x, obj.y, obj.r
    if obj.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(obj.shape)


def render(objs: Sequence[Obj], px: int) -> tuple[Image.Image, np.ndarray]:
    """RGB image and masks uint8 [K, px, px] (1 where object k's pixels are)."""
    image = Image.new("RGB", (px, px), BACKGROUND)
    labels = Image.new("L", (px, px), 0)
    draw_image, draw_labels = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for k, obj in enumerate(objs):
        _draw(draw_image, obj, COLORS[obj.color])
        _draw(draw_labels, obj, k + 1)
    label_map = np.asarray(labels)
    masks = np.stack([label_map == k + 1 for k in range(len(objs))]).astype(np.uint8)
    return image, masks


def mask_box(mask: np.ndarray) -> list[int]:
    """Tight [x0, y0, x1, y1) box of a non-empty [H, W] mask."""
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


# ------------------------------------------------------------------------ videos
def sample_motion_scene(
    rng: np.random.Generator, px: int, n_objects: int, frames: int, speed: tuple[int, int], tries: int = 300
) -> tuple[list[Obj], list[str], list[tuple[int, int]]]:
    """Objects, their motion words and per-frame velocities; in bounds and apart in every frame."""
    motions = list(MOTIONS)
    for _ in range(tries):
        start = sample_scene(rng, px, n_objects)
        words = [motions[rng.integers(len(motions))] for _ in start]
        velocities = []
        for word in words:
            step = int(rng.integers(speed[0], speed[1] + 1))
            dx, dy = MOTIONS[word]
            velocities.append((dx * step, dy * step))
        trajectory = [frame_objects(start, velocities, t) for t in range(frames)]
        inside = all(o.r <= o.x < px - o.r and o.r <= o.y < px - o.r for objs in trajectory for o in objs)
        apart = all(_apart(a, b) for objs in trajectory for i, a in enumerate(objs) for b in objs[i + 1 :])
        if inside and apart:
            return start, words, velocities
    raise RuntimeError(f"could not place {n_objects} moving objects after {tries} tries")


def frame_objects(start: Sequence[Obj], velocities: Sequence[tuple[int, int]], t: int) -> list[Obj]:
    return [replace(o, x=o.x + vx * t, y=o.y + vy * t) for o, (vx, vy) in zip(start, velocities, strict=True)]


def render_video(start: Sequence[Obj], velocities: Sequence[tuple[int, int]], frames: int, px: int) -> np.ndarray:
    """uint8 [T, px, px, 3]."""
    return np.stack([np.asarray(render(frame_objects(start, velocities, t), px)[0]) for t in range(frames)])
