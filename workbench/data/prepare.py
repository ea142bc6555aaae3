"""Make sure the configured data set exists (generating ShapesWorld once, announced), and fingerprint it
for the tracker."""

from __future__ import annotations

import hashlib
from pathlib import Path

from workbench.data.shapes import GENERATOR, generate, read_manifest
from workbench.errors import DataError
from workbench.progress import phase, say


def prepare_data(data_cfg) -> dict:
    """`ensure_data`, announced and timed when it generates ShapesWorld; the manifest, with its `data_hash`
    (a name-only manifest for real data)."""
    manifest = read_manifest(Path(data_cfg.root))
    ready = manifest and (manifest.get("seed"), manifest.get("size")) == (data_cfg.shapes_seed, data_cfg.shapes_size)
    if data_cfg.generate and not ready and (not Path(data_cfg.root).exists() or manifest):
        say(
            f"generating ShapesWorld ({data_cfg.shapes_size} size, seed {data_cfg.shapes_seed}) into {data_cfg.root}"
            " — once; later runs reuse it"
        )
        with phase("data generation"):
            manifest = ensure_data(data_cfg)
    else:
        manifest = ensure_data(data_cfg)
    manifest = manifest or {"generator": Path(data_cfg.root).name}
    manifest.setdefault("data_hash", data_hash(data_cfg))
    return manifest


def ensure_data(data_cfg) -> dict | None:
    """ShapesWorld's manifest (generating it into `data.root` when `data.generate` and the
    directory is missing, empty or holds another seed/size), or None for real data."""
    root = Path(data_cfg.root)
    manifest = read_manifest(root)
    is_shapes = bool(manifest) and manifest.get("generator") == GENERATOR
    empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    if data_cfg.generate and (is_shapes or empty):
        return generate(root, seed=data_cfg.shapes_seed, size=data_cfg.shapes_size)
    if not root.is_dir():
        raise DataError(f"data.root: {root} does not exist (set data.generate=true to generate ShapesWorld there)")
    return manifest if is_shapes else None


def data_hash(data_cfg) -> str:
    """ShapesWorld's manifest `data_hash`; for real data a sha256 of the JSON files in `data.root`."""
    root = Path(data_cfg.root)
    manifest = read_manifest(root)
    if manifest and manifest.get("generator") == GENERATOR and "data_hash" in manifest:
        return manifest["data_hash"]
    digest = hashlib.sha256()
    for path in sorted(root.glob("*.json")):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
