"""YAML for config and sweep files, read strictly: what a person wrote, once, and small.

``yaml.safe_load`` accepts three things that hurt here:
* anchors and aliases (``&a`` / ``*a``): nine nested levels of a 1 KB file expand to
  billions of nodes (the "alias bomb") and exhaust memory before any check runs;
* duplicate keys: the last one silently wins (a sweep variant named twice replaces
  the first);
* unbounded nesting and size.
This loader refuses each with a `ConfigError` naming the file and line. Config files
have no use for aliases: ``--set`` and sweep ``overrides:`` cover sharing values.
"""

from __future__ import annotations

import reprlib

import yaml

MAX_DEPTH = 64  # config nesting is 3 deep; anything near this is not a config
MAX_NODES = 200_000  # a sweep with a big axis list is a few thousand nodes
MAX_BYTES = 4 * 1024 * 1024


class YamlError(ValueError):
    """A YAML text we refuse; `line` is 1-based (0 when unknown)."""

    def __init__(self, problem: str, line: int = 0):
        super().__init__(problem)
        self.problem = problem
        self.line = line


_brief = reprlib.Repr()
_brief.maxlevel = 2
_brief.maxdict = _brief.maxlist = _brief.maxtuple = _brief.maxset = 6
_brief.maxstring = _brief.maxother = 60
_brief.maxlong = 40


def brief(value: object) -> str:
    """`repr(value)` cut to a few dozen characters: error messages never format a huge value
    (reprlib stops at the limits, so this is cheap even for a deeply nested value)."""
    return _brief.repr(value)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and duplicate keys, and bounds depth and size."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise YamlError(f"alias '*{event.anchor}' refused: config files may not use YAML anchors or aliases", line)
        if getattr(event, "anchor", None) is not None:
            raise YamlError(f"anchor '&{event.anchor}' refused: config files may not use YAML anchors or aliases", line)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YamlError(f"more than {MAX_NODES} YAML nodes; this is not a config file", line)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels", line)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error says so below
                    continue
                if first is not None:
                    raise YamlError(
                        f"duplicate key {brief(key)} (first on line {first}); the second would silently replace "
                        "the first",
                        line,
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> object:
    """Parse `text` strictly (see the module docstring). Raises `YamlError` or `yaml.YAMLError`."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"{len(text)} characters; a config or sweep file is at most {MAX_BYTES}")
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
