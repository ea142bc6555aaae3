"""The typed run configuration, as the rest of workbench uses it: ``from workbench.config import ...``.

- `schema`: the dataclasses (`RunConfig` and one per component), each field's range and help;
- `loader`: defaults <- experiments/<name>.yaml <- --set overrides (`load_config`, `from_dict`),
  and the dotted views of a config (`flatten`, `to_yaml`, `all_keys`);
- `checks`: `validate`, every field's range and the rules between fields;
- `paths`: `~` and `$VAR` in path settings; `keys`: `workbench config keys`.
"""

from workbench.config.checks import validate
from workbench.config.loader import (
    EXPERIMENTS_DIR,
    all_keys,
    flatten,
    from_dict,
    load_config,
    parse_override,
    read_yaml,
    resolve_experiment,
    resolve_named_yaml,
    to_dict,
    to_yaml,
)
from workbench.config.schema import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    FusionConfig,
    ITCConfig,
    ITMConfig,
    MLMConfig,
    ModelConfig,
    ObjectivesConfig,
    RunConfig,
    SCLConfig,
    SoftMaskConfig,
    TextConfig,
    TrackingConfig,
    TrainConfig,
    VisionConfig,
    WarmStartConfig,
)

__all__ = [
    "EXPERIMENTS_DIR",
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "FusionConfig",
    "ITCConfig",
    "ITMConfig",
    "MLMConfig",
    "ModelConfig",
    "ObjectivesConfig",
    "RunConfig",
    "SCLConfig",
    "SoftMaskConfig",
    "TextConfig",
    "TrackingConfig",
    "TrainConfig",
    "VisionConfig",
    "WarmStartConfig",
    "all_keys",
    "flatten",
    "from_dict",
    "load_config",
    "parse_override",
    "read_yaml",
    "resolve_experiment",
    "resolve_named_yaml",
    "to_dict",
    "to_yaml",
    "validate",
]
