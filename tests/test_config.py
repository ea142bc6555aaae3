"""Config: defaults <- YAML <- --set, and every validation error path."""

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.config import (
    RunConfig,
    all_keys,
    flatten,
    from_dict,
    load_config,
    parse_override,
    to_dict,
    to_yaml,
)
from workbench.errors import ConfigError


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("objectives:\n  scl: {image_mask_ratio: 0.6, text_mask_ratio: 0.2}\ntrain: {steps: 7}\n")
    cfg = load_config(exp, ["objectives.scl.image_mask_ratio=0.5", "train.device=cpu"])
    assert cfg.objectives.scl.image_mask_ratio == 0.5  # --set beats YAML
    assert cfg.objectives.scl.text_mask_ratio == 0.2  # YAML beats default
    assert cfg.train.steps == 7
    assert cfg.objectives.scl.temperature == RunConfig().objectives.scl.temperature  # default kept
    assert cfg.train.device == "cpu"


def test_override_values_are_typed():
    assert parse_override("objectives.scl.mvsc=false") == ("objectives.scl.mvsc", False)
    assert parse_override("train.steps=30") == ("train.steps", 30)
    assert parse_override("eval.tasks=[vqa,ve]") == ("eval.tasks", ["vqa", "ve"])
    # a str field keeps the raw text, even when it looks like a number
    assert parse_override("data.root=007") == ("data.root", "007")
    cfg = load_config("base", ["eval.tasks=vqa,ve", "objectives.itc.focal_gamma=1"])
    assert cfg.eval.tasks == ["vqa", "ve"]
    assert cfg.objectives.itc.focal_gamma == 1.0 and isinstance(cfg.objectives.itc.focal_gamma, float)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "objectives.scl.image_mask_ratoi=0.3",
            "unknown config key 'objectives.scl.image_mask_ratoi' — did you mean 'objectives.scl.image_mask_ratio'?",
        ),
        (
            "objectives.scl.image_mask_ratio=1.0",
            "objectives.scl.image_mask_ratio: 1.0 is out of range — allowed: in [0.0, 1.0)",
        ),
        ("objectives.scl.image_mask_ratio=-0.1", "objectives.scl.image_mask_ratio: -0.1 is out of range"),
        ("objectives.scl.image_mask_ratio=abc", "objectives.scl.image_mask_ratio: 'abc' is not a float"),
        ("objectives.itc.focal_gamma=-1", "objectives.itc.focal_gamma: -1.0 is out of range — allowed: >= 0.0"),
        ("model.vision.depth=0", "model.vision.depth: 0 is out of range — allowed: in [1, 256]"),
        (
            "model.vision.pooling=mea",
            "model.vision.pooling: 'mea' is not one of frame_cls, global_cls, mean — did you mean 'mean'?",
        ),
        ("objectives.softmask.mode=sfot", "did you mean 'soft'?"),
        ("train.steps=1.5", "train.steps: 1.5 is not an int"),
        ("objectives.scl.mvsc=maybe", "objectives.scl.mvsc: 'maybe' is not a bool"),
        (
            "eval.tasks=[retreival]",
            "eval.tasks: 'retreival' is not one of retrieval, video_retrieval, vqa, nlvr, ve — did you mean "
            "'retrieval'?",
        ),
        ("objectives.softmask.layer=5", "objectives.softmask.layer: 5 is out of range"),
        ("model.vision.heads=5", "model.vision.heads: 5 must divide model.vision.width=192"),
        ("model.vision.patch_size=7", "model.vision.patch_size: 7 must divide data.image_size=64"),
        ("objectives.scl=1", "objectives.scl: is a section"),
        ("no_equals_sign", "expected KEY=VALUE"),
    ],
)
def test_validation_errors_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("base", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("objectives:\n  scl:\n    image_mask_ratoi: 0.3\n")
    with pytest.raises(ConfigError, match="did you mean 'objectives.scl.image_mask_ratio'"):
        load_config(unknown)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(not_mapping)
    with pytest.raises(ConfigError, match="unknown experiment 'bsae'.*did you mean 'base'"):
        load_config("bsae")


def test_round_trip_through_yaml_and_flatten():
    cfg = load_config("base", ["objectives.scl.text_mask_ratio=0.2"])
    again = from_dict(yaml.safe_load(to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)
    flat = flatten(cfg)
    assert flat["objectives.scl.text_mask_ratio"] == 0.2
    assert set(flat) == set(all_keys())


def test_cli_config_show_and_one_line_errors():
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "show", "--set", "objectives.scl.mvsc=false"])
    assert ok.exit_code == 0
    assert yaml.safe_load(ok.stdout)["objectives"]["scl"]["mvsc"] is False
    bad = runner.invoke(app, ["config", "show", "--set", "objectives.scl.image_mask_ratoi=0.3"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        "error: unknown config key 'objectives.scl.image_mask_ratoi' — did you mean 'objectives.scl.image_mask_ratio'?"
    ]
    assert "Traceback" not in bad.output
