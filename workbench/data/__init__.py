"""Data: the embedded ShapesWorld generator, readers for ALBEF-style JSON lists,
transforms, datasets, collate functions and the pre-training batch stream.

Names are re-exported lazily (PEP 562) so importing `workbench.data.shapes` does
not pull in torch, and importing this package has no side effects.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "generate": "shapes",
    "load_tokenizer": "tokenizer",
    "build_tokenizer": "tokenizer",
    "read_entries": "readers",
    "Collate": "datasets",
    "tokenize": "datasets",
    "task_dataset": "datasets",
    "PretrainStream": "stream",
    "ensure_data": "prepare",
    "prepare_data": "prepare",
    "data_hash": "prepare",
    "check_dataset": "check",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"workbench.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'workbench.data' has no attribute {name!r}")
