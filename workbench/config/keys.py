"""`workbench config keys [PATTERN]`: every settable key with its type, default and help.

Read from the config dataclasses themselves, so the list cannot drift from what
`--set` accepts: the type from the annotation, the default from a fresh instance,
the allowed range from the field's metadata and the help from the comment on the
field's line (`steps: int = positive(300)  # the help`).
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from workbench.config.schema import RunConfig


@dataclass(frozen=True)
class KeyInfo:
    key: str
    type: str
    default: str
    help: str


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(str(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list[{typing.get_args(hint)[0].__name__}]"
    return getattr(hint, "__name__", str(hint))


def _range(meta: typing.Mapping[str, Any]) -> str:
    low, high = meta.get("min"), meta.get("max")
    if low is None and high is None:
        return ""
    if high is None:
        return f">= {low}"
    return f"in [{low}, {high}{')' if meta.get('max_open') else ']'}"


@cache
def field_comments(cls: type) -> dict[str, str]:
    """{field name: its help} from the class's source ({} without source): the comments inside the
    field's statement (on its line, or where a formatter moved them: after the closing `)`), else
    the comment lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    notes: dict[int, str] = {}  # line -> comment text
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            notes[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    comments: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        inside = [notes[n] for n in range(node.lineno, node.end_lineno + 1) if n in notes]
        above, n = [], node.lineno - 1
        while n in notes and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, notes[n])
            n -= 1
        if inside or above:
            comments[node.target.id] = " ".join(inside or above)
    return comments


def key_infos(cls: type = RunConfig, instance: Any = None, prefix: str = "") -> list[KeyInfo]:
    instance = instance if instance is not None else cls()
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    out: list[KeyInfo] = []
    for f in dataclasses.fields(cls):
        hint, value = hints[f.name], getattr(instance, f.name)
        if dataclasses.is_dataclass(hint):
            out += key_infos(hint, value, f"{prefix}{f.name}.")
            continue
        notes = [part for part in (comments.get(f.name, ""), _range(f.metadata)) if part]
        shown = (
            "[" + ", ".join(map(str, value)) + "]"
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else repr(value)
            if value == ""
            else str(value)
        )
        out.append(KeyInfo(f"{prefix}{f.name}", type_name(hint), shown, "; ".join(notes)))
    return out


def matching(pattern: str | None) -> list[KeyInfo]:
    """Keys matching a glob (`train.*`, `*ratio*`) or containing `pattern` as text."""
    infos = key_infos()
    if not pattern:
        return infos
    if any(c in pattern for c in "*?["):
        return [i for i in infos if fnmatch.fnmatchcase(i.key, pattern)]
    return [i for i in infos if pattern in i.key]


def render(infos: list[KeyInfo]) -> str:
    """Aligned plain text: key, type, default, help (one line per key, greppable)."""
    if not infos:
        return ""
    header = ("KEY", "TYPE", "DEFAULT")
    widths = [max(len(h), *(len(getattr(i, h.lower())) for i in infos)) for h in header]
    widths = [min(w, cap) for w, cap in zip(widths, (40, 34, 24), strict=True)]
    rows = [f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:<{widths[2]}}  HELP"]
    for i in infos:
        rows.append(f"{i.key:<{widths[0]}}  {i.type:<{widths[1]}}  {i.default:<{widths[2]}}  {i.help}".rstrip())
    return "\n".join(rows)
