"""Reading a run config: defaults <- experiments/<name>.yaml <- --set a.b.c=value.

Every value is checked against its field's annotation as it is applied, and the
result goes through `checks.validate`, so a bad value is rejected at load time with
the dotted key, the value and what is allowed -- never deep inside training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from workbench.config.checks import validate
from workbench.config.schema import RunConfig
from workbench.errors import ConfigError, did_you_mean
from workbench.strict_yaml import YamlError, brief
from workbench.strict_yaml import load as load_yaml

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config class, e.g. 'objectives.scl.image_mask_ratio'."""
    keys = []
    for name, hint in _hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys += all_keys(hint, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown_key(key: str) -> ConfigError:
    return ConfigError(f"unknown config key '{key}'{did_you_mean(key, all_keys())}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    name = getattr(hint, "__name__", str(hint))
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the annotation `hint`; return it in the field's type."""
    origin = typing.get_origin(hint)

    def bad() -> ConfigError:  # built only when raised, with the value cut short (never a huge repr)
        return ConfigError(f"{key}: {brief(value)} is not {_describe(hint)}")

    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {brief(value)} is not one of {', '.join(map(str, allowed))}{did_you_mean(value, allowed)}"
            )
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise bad()
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e6' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(value):  # nan passes every range check; inf is no setting either
            raise ConfigError(f"{key}: {brief(value)} is not a finite number")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad()
        return str(value)
    if isinstance(hint, types.UnionType):  # pragma: no cover - no unions in the schema yet
        raise bad()
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {brief(data)}")
    hints = _hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            _apply(getattr(obj, name), value, f"{key}.")
            continue
        setattr(obj, name, _coerce(key, value, hint))


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b.c=value' -> ('a.b.c', value). Values are YAML scalars/lists ('0.4', 'true', '[a,b]')."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. objectives.scl.image_mask_ratio=0.6")
    hint = _hint_for(key)
    if hint is str or typing.get_origin(hint) is Literal:
        return key, raw.strip()  # strings stay strings: '--set data.root=007' is not an int
    try:
        return key, load_yaml(raw) if raw.strip() else raw
    except YamlError as err:
        raise ConfigError(f"--set {key}: {err.problem}") from None
    except yaml.YAMLError:
        return key, raw


def _hint_for(key: str) -> Any:
    cls: Any = RunConfig
    for part in key.split("."):
        hints = _hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            raise _unknown_key(key)
        cls = hints[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"{key}: is a section; set one of its keys, e.g. {all_keys(cls, key + '.')[0]}")
    return cls


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def resolve_named_yaml(name_or_path: str | Path, folders: list[Path], kind: str) -> Path:
    """A YAML path, or a name looked up as `<folder>/<name>.yaml` in `folders` (first wins)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{kind} file not found: {path}")
        return path
    for folder in folders:
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
    hint = did_you_mean(name_or_path, known)
    raise ConfigError(f"unknown {kind} {str(name_or_path)!r} (known: {', '.join(known)}){hint}")


def resolve_experiment(experiment: str | Path) -> Path:
    """An experiment is a YAML path or a name under experiments/ (e.g. 'base')."""
    return resolve_named_yaml(experiment, [Path.cwd() / "experiments", EXPERIMENTS_DIR], "experiment")


def read_yaml(path: Path, contents: str = "config sections") -> dict[str, Any]:
    """A YAML mapping (strict: no aliases, no duplicate keys; see strict_yaml); bad YAML or another type is one line
    naming the file (and line)."""
    try:
        data = load_yaml(path.read_text())
    except YamlError as err:
        where = f" line {err.line}" if err.line else ""
        raise ConfigError(f"{path}{where}: {err.problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); a config file is YAML text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {contents}, got {type(data).__name__}")
    return data


def load_config(
    experiment: str | Path | None = "base",
    overrides: list[str] | dict[str, Any] | None = None,
) -> RunConfig:
    """defaults <- experiment YAML <- overrides; validated."""
    cfg = RunConfig()
    if experiment:
        _apply(cfg, read_yaml(resolve_experiment(experiment)))
    _apply_overrides(cfg, overrides)
    return validate(cfg)


def _apply_overrides(cfg: RunConfig, overrides: list[str] | dict[str, Any] | None) -> None:
    if not overrides:
        return
    flat = overrides if isinstance(overrides, dict) else dict(parse_override(o) for o in overrides)
    for key in flat:
        _hint_for(key)
    _apply(cfg, nest(flat))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output (e.g. a run's saved config.yaml), then overrides."""
    cfg = RunConfig()
    _apply(cfg, data)
    _apply_overrides(cfg, overrides)
    return validate(cfg)


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(cfg: RunConfig | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys -> values, for MLflow params and sweep axes."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
