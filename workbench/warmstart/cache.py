"""Where warm-start weights live, making them when missing, and loading them into a model.

`model.vision.init` / `model.text.init`: "random" = the encoder as built (random
tiny weights, or the configured checkpoint); "warmstart" = the uni-modal warm start
cached under `<data.root>/warmstart/`, keyed by everything that shapes it (the
encoder's architecture, the warm-start settings, and for text the data set and
vocabulary), made once when missing; anything else = a file written by
`workbench data warmstart --out`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from workbench import checkpoint
from workbench.config import RunConfig
from workbench.data import data_hash, read_entries
from workbench.data.shapes import locked
from workbench.errors import ConfigError
from workbench.objectives import special_ids_of
from workbench.progress import TrainProgress, format_seconds, say

PARTS = ("vision", "text")
RANDOM, WARMSTART = "random", "warmstart"
FORMAT = "workbench-warmstart-1"
RECIPE = {"vision": 2, "text": 3}  # bump a part's number when its recipe changes: its cache key changes with it
ESTIMATE_AFTER = 3  # steps timed before the warm start's expected time is announced


def _init(cfg: RunConfig, part: str) -> str:
    return getattr(cfg.model, part).init


def cache_key(cfg: RunConfig, part: str, vocab_size: int | None = None) -> str:
    """A short hash of every setting the `part` warm start depends on."""
    settings = asdict(cfg.warmstart)
    settings.pop("text_steps" if part == "vision" else "vision_steps")
    encoder = {k: v for k, v in asdict(getattr(cfg.model, part)).items() if k != "init"}
    key = {
        "format": FORMAT,
        "recipe": RECIPE[part],
        "part": part,
        "encoder": encoder,
        "warmstart": settings,
        "image_size": cfg.data.image_size,
    }
    if part == "text":
        key |= {
            "data": data_hash(cfg.data),
            "files": cfg.data.pretrain_files,
            "vocab": vocab_size,
            "max_text_len": cfg.data.max_text_len,
        }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def cached_path(cfg: RunConfig, part: str, vocab_size: int | None = None) -> Path:
    return Path(cfg.data.root) / "warmstart" / f"{part}-{cache_key(cfg, part, vocab_size)}.pt"


def init_path(cfg: RunConfig, part: str, vocab_size: int | None = None) -> Path | None:
    """The weights file `model.<part>.init` selects, or None for "random"."""
    init = _init(cfg, part)
    if init == RANDOM:
        return None
    if init == WARMSTART:
        return cached_path(cfg, part, vocab_size)
    return Path(init)


def _save(path: Path, part: str, state: dict, metrics: dict[str, float]) -> None:
    """Atomic: a killed warm start leaves no half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"format": FORMAT, "part": part, "state": state, "metrics": metrics}, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left (a full disk, a signal)
        raise


def make(cfg: RunConfig, tokenizer, part: str, path: Path, progress: bool = True) -> dict[str, float]:
    """Train the `part` warm start from scratch and save its encoder weights to `path`."""
    _import_encoders()  # before the clock starts: the time estimate below is of steps, not imports
    ws = cfg.warmstart
    steps = ws.vision_steps if part == "vision" else ws.text_steps
    bar = TrainProgress(total=steps, enabled=progress, description=f"warm start ({part})")
    started = time.perf_counter()

    def on_step(step: int, loss: float) -> None:
        bar.update(step, {"loss": loss}, None)
        if step == min(ESTIMATE_AFTER, steps) and progress:  # once, from this machine's own speed
            per_step = (time.perf_counter() - started) / step
            say(
                f"warm start ({part}): about {format_seconds(per_step * steps)} for {steps} steps "
                f"({per_step:.2f} s/step over the first {step}; made once, then cached)"
            )

    try:
        if part == "vision":
            state, metrics = _train_vision_part(cfg, steps, on_step)
        else:
            state, metrics = _train_text_part(cfg, tokenizer, steps, on_step)
    except BaseException as err:  # Ctrl-C, SIGTERM, an error: the line says "stopped", not "done"
        bar.close(err)
        raise
    bar.close()
    _save(path, part, state, metrics)
    return metrics


def _import_encoders() -> None:
    """Deferred: the encoders import timm and transformers (seconds); finding a cached warm start
    (`ensure` in the demo's parent process, `cached_path`, `apply_init`) must not pay for them.
    The trainers below import them again, from the module cache."""
    import workbench.data.transforms  # noqa: F401
    import workbench.models.text  # noqa: F401
    import workbench.models.vision  # noqa: F401
    import workbench.warmstart.text  # noqa: F401
    import workbench.warmstart.vision  # noqa: F401


def _train_vision_part(cfg: RunConfig, steps: int, on_step: Callable[[int, float], None]) -> tuple[dict, dict]:
    """The vision encoder's warm start: (its ViT's state dict, metrics)."""
    from workbench.data.transforms import normalization
    from workbench.models.vision import VisionEncoder
    from workbench.warmstart.vision import train_vision

    ws = cfg.warmstart
    encoder = VisionEncoder(cfg.model.vision, cfg.data.image_size)
    mean, std = normalization(cfg)
    metrics = train_vision(
        encoder,
        steps=steps,
        batch_size=ws.batch_size,
        lr=ws.lr,
        seed=ws.seed,
        image_size=cfg.data.image_size,
        mean=mean,
        std=std,
        on_step=on_step,
    )
    return encoder.vit.state_dict(), metrics


def _train_text_part(cfg: RunConfig, tokenizer, steps: int, on_step: Callable[[int, float], None]) -> tuple[dict, dict]:
    """The text encoder's warm start (MLM on the pre-training captions): (its BERT's state dict, metrics)."""
    from workbench.models.text import TextEncoder
    from workbench.warmstart.text import train_text

    ws = cfg.warmstart
    encoder = TextEncoder(
        cfg.model.text,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_text_len=cfg.data.max_text_len,
    )
    entries = read_entries(cfg.data, cfg.data.pretrain_files, "pretrain")
    captions = [c for e in entries.items for c in ([e["caption"]] if isinstance(e["caption"], str) else e["caption"])]
    metrics = train_text(
        encoder,
        captions,
        tokenizer,
        steps=steps,
        batch_size=ws.batch_size,
        lr=ws.lr,
        seed=ws.seed,
        mask_prob=ws.mask_prob,
        max_text_len=cfg.data.max_text_len,
        special_ids=special_ids_of(tokenizer),
        on_step=on_step,
    )
    return encoder.bert.state_dict(), metrics


def ensure(cfg: RunConfig, tokenizer, progress: bool = True, announce=print) -> dict[str, Path]:
    """Every `init: warmstart` file this config needs, made (announced, with progress) when missing."""
    paths = {}
    for part in PARTS:
        if _init(cfg, part) != WARMSTART:
            continue
        path = cached_path(cfg, part, len(tokenizer))
        if not _usable(path, part):
            try:
                with locked(path):  # concurrent sweep trials: one makes it, the others wait and reuse it
                    if path.is_file() and not _usable(path, part):  # workbench made it: made again
                        announce(
                            f"warm start: the cached {part} weights at {path} cannot be read (truncated?) "
                            "— making them again"
                        )
                        path.unlink()
                    if not path.is_file():
                        announce(
                            f"warm start: no {part} weights at {path} — training them once "
                            f"({getattr(cfg.warmstart, part + '_steps')} steps, cached for later runs)"
                        )
                        make(cfg, tokenizer, part, path, progress)
            except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
                why = getattr(err, "strerror", None) or " ".join(str(err).split())[:120] or type(err).__name__
                raise ConfigError(
                    f"model.{part}.init=warmstart: cannot write the warm-start cache {path} ({why}); make "
                    f"{path.parent} writable, or make the weights elsewhere with `workbench data warmstart --out FILE` "
                    f"and set model.{part}.init=FILE"
                ) from None
        paths[part] = path
    return paths


def _usable(path: Path, part: str) -> bool:
    """A cached warm-start file that loads (a truncated one, e.g. from a full disk, does not)."""
    if not path.is_file():
        return False
    try:
        _load(path, part)
    except ConfigError:
        return False
    return True


def _load(path: Path, part: str) -> dict:
    key = f"model.{part}.init"
    if not path.is_file():
        raise ConfigError(
            f"{key}: {str(path)!r} is not a file — use 'random', 'warmstart' or a file written by "
            f"`workbench data warmstart --out`"
        )
    try:
        saved = checkpoint.torch_load(path)
    except Exception as err:  # truncated or foreign file
        raise ConfigError(
            f"{key}: cannot read {str(path)!r} ({type(err).__name__}: truncated or not a torch file); write it again "
            f"with `workbench data warmstart --out {path}`, or set {key}=warmstart (made and cached when missing)"
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("part") != part:
        raise ConfigError(f"{key}: {str(path)!r} is not a {part} warm-start file (from `workbench data warmstart`)")
    return saved["state"]


def apply_init(model: torch.nn.Module, cfg: RunConfig, vocab_size: int | None = None) -> list[str]:
    """Load the selected warm-start weights into a freshly built VLP model; the parts loaded."""
    loaded = []
    targets = {"vision": lambda: model.vision.vit, "text": lambda: model.text.bert}
    for part in PARTS:
        path = init_path(cfg, part, vocab_size)
        if path is None:
            continue
        state = _load(path, part)
        try:
            targets[part]().load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"model.{part}.init: {str(path)!r} does not fit model.{part} ({first})") from None
        loaded.append(part)
    return loaded
