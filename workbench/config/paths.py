"""`~` and `$VAR` in path settings mean what a shell would make of them.

`--set train.out_dir=~/runs` (quoted, or in a YAML file, where no shell expands it)
created a folder literally named `~` in the working directory, and `${HOME}/data`
one named `${HOME}`. Every path setting is expanded here, when the config is
validated; a variable that is not set, or `~user` of an unknown user, is refused
in one line instead of becoming a folder name.
"""

from __future__ import annotations

import os
import re

from workbench.errors import ConfigError

PATH_KEYS = (
    "data.root",
    "data.image_root",
    "data.tokenizer",
    "train.out_dir",
    "model.vision.checkpoint",
    "model.vision.init",
    "model.text.init",
    "model.text.hf_name",
)
SQLITE = "sqlite:///"
_UNSET = re.compile(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def expand(key: str, value: str) -> str:
    """`value` with `~` and environment variables expanded; ConfigError naming `key` if one cannot be."""
    if "~" not in value and "$" not in value:
        return value
    expanded = os.path.expandvars(os.path.expanduser(value))
    unset = _UNSET.search(expanded)
    if unset:
        raise ConfigError(
            f"{key}: {value!r} names the environment variable {unset.group(0)}, which is not set; "
            "set it or give the path itself"
        )
    if expanded.startswith("~"):
        raise ConfigError(
            f"{key}: {value!r}: {expanded.split('/', 1)[0]} is no known user's home; give the path itself"
        )
    return expanded


def expand_paths(cfg) -> None:
    """Expand every path setting of `cfg` in place (and the file path of a `sqlite:///` tracking URI)."""
    for key in PATH_KEYS:
        section, *middle, name = key.split(".")
        owner = getattr(cfg, section)
        for part in middle:
            owner = getattr(owner, part)
        value = getattr(owner, name)
        if isinstance(value, str):
            setattr(owner, name, expand(key, value))
    uri = cfg.tracking.uri
    if isinstance(uri, str) and uri.startswith(SQLITE):
        path = expand("tracking.uri", uri.removeprefix(SQLITE))
        cfg.tracking.uri = SQLITE + path
