"""The uni-modal warm start: its image labels, its cache, and loading it into a VLP model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from workbench.config import load_config
from workbench.data import load_tokenizer
from workbench.data.shapes_attributes import PATCH_LABELS, labelled_scenes, patch_owner
from workbench.data.shapes_scene import BACKGROUND, COLORS
from workbench.errors import ConfigError
from workbench.pretrainer import build
from workbench.warmstart import apply_init, cached_path, ensure, init_path

TINY = {
    "model.vision.width": 32,
    "model.vision.depth": 1,
    "model.vision.heads": 2,
    "model.text.width": 32,
    "model.text.depth": 1,
    "model.text.heads": 2,
    "model.fusion.width": 32,
    "model.fusion.heads": 2,
    "model.fusion.layers": 2,
    "objectives.itc.embed_dim": 16,
    "warmstart.vision_steps": 2,
    "warmstart.text_steps": 2,
    "warmstart.batch_size": 4,
}


@pytest.fixture()
def data_root(shapes_tiny, tmp_path):
    root = tmp_path / "shapes"
    shutil.copytree(shapes_tiny, root)
    return root


def cfg_for(root, **overrides):
    return load_config(None, {"data.root": str(root), **TINY, **overrides})


def test_patch_owner_takes_the_object_covering_most_of_a_patch():
    masks = np.zeros((2, 8, 8), dtype=np.uint8)  # 4 patches of 4x4
    masks[0, :4, :4] = 1  # object 1 fills patch 0
    masks[0, 0, 4:6] = 1  # 2/16 of patch 1: below 25 %
    masks[1, 4:8, 4:6] = 1  # object 2: half of patch 3
    masks[0, 4:6, 6:8] = 1  # object 1: a quarter of patch 3 (object 2 covers more)
    assert patch_owner(masks, 4).tolist() == [1, 0, 0, 2]
    assert patch_owner(np.zeros((0, 8, 8), dtype=np.uint8), 4).tolist() == [0, 0, 0, 0]


def test_labelled_scenes_label_each_patch_with_what_is_drawn_there():
    batch = labelled_scenes(np.random.default_rng(0), 6, px=64, patch=8, max_objects=4, mean=(0, 0, 0), std=(1, 1, 1))
    assert batch["image"].shape == (6, 1, 3, 64, 64) and batch["color"].shape == (6, 64)
    assert ((batch["objects"] >= 1) & (batch["objects"] <= 4)).all()
    assert torch.equal(batch["present"].sum(1).long(), batch["objects"])
    pixels = (batch["image"][:, 0] * 255).round().long()  # [6, 3, 64, 64] in 0..255
    patches = pixels.unfold(2, 8, 8).unfold(3, 8, 8)  # [6, 3, 8, 8, 8, 8]
    colours = {i: torch.tensor(COLORS[name]) for i, name in enumerate(PATCH_LABELS["color"]) if i}
    for image in range(6):
        for index in range(64):
            label = int(batch["color"][image, index])
            patch = patches[image, :, index // 8, index % 8].reshape(3, -1).t()  # [64 pixels, 3]
            if label:  # a quarter or more of the patch is that colour
                assert (patch == colours[label]).all(dim=1).float().mean() >= 0.25
                assert batch["shape"][image, index] > 0 and batch["size"][image, index] > 0
            else:
                assert batch["shape"][image, index] == 0
    background = (patches.permute(0, 2, 3, 4, 5, 1).reshape(-1, 3) == torch.tensor(BACKGROUND)).all(1).float().mean()
    assert (batch["color"] == 0).float().mean() > 0.3 and background > 0.3


def test_init_selects_no_file_the_cache_or_a_path(data_root, tmp_path):
    cfg = cfg_for(data_root)
    assert init_path(cfg, "vision") is None and init_path(cfg, "text") is None
    cached = cfg_for(data_root, **{"model.vision.init": "warmstart"})
    assert init_path(cached, "vision") == cached_path(cached, "vision")
    assert init_path(cached, "vision").parent == data_root / "warmstart"
    other = cfg_for(data_root, **{"model.vision.init": "warmstart", "warmstart.vision_steps": 3})
    assert cached_path(other, "vision") != cached_path(cached, "vision")  # settings are in the key
    assert cached_path(other, "text", 50) == cached_path(cached, "text", 50)  # vision steps are not text's
    assert init_path(cfg_for(data_root, **{"model.text.init": str(tmp_path / "t.pt")}), "text") == tmp_path / "t.pt"
    with pytest.raises(ConfigError, match=r"^model\.vision\.init: '' is not a setting"):
        cfg_for(data_root, **{"model.vision.init": ""})


def test_ensure_makes_the_warm_start_once_and_runs_start_from_it(data_root):
    cfg = cfg_for(data_root, **{"model.vision.init": "warmstart", "model.text.init": "warmstart"})
    tokenizer = load_tokenizer(cfg.data)
    said = []
    paths = ensure(cfg, tokenizer, progress=True, announce=said.append)  # the bar is fed every step
    assert set(paths) == {"vision", "text"} and all(p.is_file() for p in paths.values())
    assert len(said) == 2 and "training them once" in said[0]
    stamps = {part: path.stat().st_mtime_ns for part, path in paths.items()}
    assert ensure(cfg, tokenizer, progress=False, announce=said.append) == paths and len(said) == 2  # cached
    assert {part: path.stat().st_mtime_ns for part, path in paths.items()} == stamps

    torch.manual_seed(0)
    fresh = build(cfg, tokenizer).model
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    assert apply_init(fresh, cfg, len(tokenizer)) == ["vision", "text"]
    saved = torch.load(paths["vision"], weights_only=True)["state"]
    assert all(torch.equal(fresh.vision.vit.state_dict()[k], v) for k, v in saved.items())
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("vision.vit.") for k in changed) and any(k.startswith("text.bert.") for k in changed)
    assert not any(k.startswith("fusion.") for k in changed)  # the fusion starts from scratch, as in the papers


def test_a_warm_start_file_that_does_not_fit_is_a_config_error(data_root, tmp_path):
    cfg = cfg_for(data_root, **{"model.vision.init": "warmstart"})
    tokenizer = load_tokenizer(cfg.data)
    path = ensure(cfg, tokenizer, progress=False, announce=lambda _: None)["vision"]
    wider = cfg_for(data_root, **{"model.vision.init": str(path), "model.vision.width": 64})
    with pytest.raises(ConfigError, match=r"^model\.vision\.init: .* does not fit model\.vision"):
        apply_init(build(wider, tokenizer).model, wider, len(tokenizer))
    as_text = cfg_for(data_root, **{"model.text.init": str(path)})
    with pytest.raises(ConfigError, match=r"^model\.text\.init: .* is not a text warm-start file"):
        apply_init(build(as_text, tokenizer).model, as_text, len(tokenizer))
    missing = cfg_for(data_root, **{"model.text.init": str(tmp_path / "nope.pt")})
    with pytest.raises(ConfigError, match=r"^model\.text\.init: .*nope\.pt' is not a file"):
        apply_init(build(missing, tokenizer).model, missing, len(tokenizer))


def test_a_run_makes_the_missing_warm_start_then_trains_from_it(data_root, tmp_path, capsys):
    from tiny_config import tiny_run

    from workbench import train

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = [
        "model.vision.init=warmstart",
        "model.text.init=warmstart",
        "warmstart.vision_steps=2",
        "warmstart.text_steps=2",
        "warmstart.batch_size=4",
        "eval.tasks=[]",
    ]
    cfg = load_config("base", tiny_run(data_root, store, tmp_path / "out", *extra, steps=2))
    result = train.run(cfg, progress=False)
    assert result.status == "FINISHED"
    said = capsys.readouterr().err
    assert said.count("training them once") == 2  # announced, vision and text
    assert sorted(p.name.split("-")[0] for p in (data_root / "warmstart").glob("*.pt")) == ["text", "vision"]
    assert train.run(cfg, progress=False).status == "FINISHED"
    assert "training them once" not in capsys.readouterr().err  # made once, then reused
