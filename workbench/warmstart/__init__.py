"""Uni-modal warm start: image-only and text-only pre-training before VLP (see `cache`)."""

from workbench.warmstart.cache import apply_init, cached_path, ensure, init_path, make

__all__ = ["apply_init", "cached_path", "ensure", "init_path", "make"]
