"""Benchmark: is the input pipeline at the decode bound? One core, real JPEG files.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loader.py [--json] [--images 64] [--repeats 5]

Writes its own 640x480 JPEGs (quality 90, photo-like: smooth colour fields, edges,
grain) and, interleaved in each repeat so a shared machine's load hits all alike:
  decode_per_s    PIL decode to an RGB array, nothing else: the bound;
  pipeline_per_s  what a training sample costs with the paper configs' train transform
                  (augment.image=false: reduced-size decode, resize to 224, normalise) on
                  the pre-training dataset's road (FrameTransform.image);
  augmented_per_s the same with ALBEF's augmentation (augment.image=true, randaug_set=albef:
                  random resized crop, RandAugment N=2 M=7, flip);
  tensor_per_s    the augmented transform on a fully decoded uint8 tensor (the video road; images took it before);
  plain_tensor_per_s  the paper configs' transform on that road (what images took before: the issue's 50/s).
ratio = pipeline_per_s / decode_per_s (target >= 0.75); augmented_ratio likewise.
Rates are medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from workbench.config import load_config
from workbench.data.media import load_image
from workbench.data.transforms import FrameTransform


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """640x480 quality-90 JPEGs with photo-like statistics (not noise, not flat)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(field).resize((640, 480), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.integers(0, 640), rng.integers(0, 480)
            r = int(rng.integers(10, 120))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        image = image.filter(ImageFilter.GaussianBlur(1.0))
        grain = rng.normal(0, 6, (480, 640, 3))
        image = Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
        path = folder / f"{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def _rate(fn, paths: list[Path]) -> float:
    start = time.perf_counter()
    for i, path in enumerate(paths):
        torch.manual_seed(i)
        fn(path)
    return len(paths) / (time.perf_counter() - start)


def measure(images: int = 64, repeats: int = 5, size: int = 224) -> dict:
    torch.set_num_threads(1)
    plain = FrameTransform(load_config(None, [f"data.image_size={size}"]), train=True)
    albef = load_config(
        None, [f"data.image_size={size}", "augment.image=true", "augment.flip=true", "augment.randaug_set=albef"]
    )
    augmented = FrameTransform(albef, train=True)
    roads = {
        "decode": lambda p: np.asarray(Image.open(p).convert("RGB")),
        "pipeline": lambda p: plain.image(str(p)),
        "augmented": lambda p: augmented.image(str(p), flip=bool(torch.randint(2, ()))),
        "tensor": lambda p: augmented(load_image(p)),
        "plain_tensor": lambda p: plain(load_image(p)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), images)
        for fn in roads.values():  # warm-up: imports, allocator, file cache
            _rate(fn, paths[:4])
        rates: dict[str, list[float]] = {name: [] for name in roads}
        for _ in range(repeats):
            for name, fn in roads.items():
                rates[name].append(_rate(fn, paths))
    per_s = {f"{name}_per_s": round(statistics.median(values), 1) for name, values in rates.items()}
    ratios = [p / d for p, d in zip(rates["pipeline"], rates["decode"], strict=True)]
    return {
        **per_s,
        "ratio": round(per_s["pipeline_per_s"] / per_s["decode_per_s"], 3),
        "ratio_per_repeat": [round(r, 3) for r in ratios],
        "augmented_ratio": round(per_s["augmented_per_s"] / per_s["decode_per_s"], 3),
        "before_ratio": round(per_s["plain_tensor_per_s"] / per_s["decode_per_s"], 3),
        "augmented_before_ratio": round(per_s["tensor_per_s"] / per_s["decode_per_s"], 3),
        "images": images,
        "repeats": repeats,
        "image_size": size,
        "jpeg": "640x480 q90",
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.images, args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key in ("decode_per_s", "pipeline_per_s", "augmented_per_s", "tensor_per_s", "plain_tensor_per_s"):
        print(f"{key:>18}: {result[key]:8.1f} images/s (one core)")
    print(
        f"{'ratio':>18}: {result['ratio']:.3f} pipeline / decode (target >= 0.75; before: {result['before_ratio']:.3f})"
    )
    print(
        f"{'augmented_ratio':>18}: {result['augmented_ratio']:.3f} augmented / decode (before: "
        f"{result['augmented_before_ratio']:.3f})"
    )


if __name__ == "__main__":
    main()
