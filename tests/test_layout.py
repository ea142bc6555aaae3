"""The docs that describe the code's shape stay true: workbench/LAYOUT.md lists every module, and
the imports follow the layers INTERFACES.md states (its ```layers block is read here)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workbench"
LAYOUT = PACKAGE / "LAYOUT.md"  # the developers' module list (the README is for users)
INTERFACES = PACKAGE / "INTERFACES.md"


# --------------------------------------------------------------------------- module layout (LAYOUT.md)
def modules(package: Path = PACKAGE) -> list[str]:
    """Every module of the package as a path under it (`data/shapes.py`); a package's
    `__init__.py` is its own line (`data/`), so it is not listed separately."""
    return sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py")


def layout_block(text: str) -> list[str]:
    """The lines of the code block under LAYOUT.md's `## Layout` heading."""
    match = re.search(r"^## Layout\n.*?^```\n(.*?)^```", text, re.M | re.S)
    assert match, "workbench/LAYOUT.md: no '## Layout' section with a ``` block"
    return match.group(1).splitlines()


def layout_entries(lines: list[str]) -> set[str]:
    """Paths (`cli.py`, `data/`, `data/shapes.py`) the `workbench/` tree of the layout block names.

    The tree is indentation: two spaces per level under `workbench/`; a name ending in `/`
    opens a package whose modules follow one level deeper, one per line, name first.
    """
    entries: set[str] = set()
    parents: list[tuple[int, str]] = []  # (indent, "data/") of the open packages
    inside = False
    for line in lines:
        name = line.split()[0] if line.strip() else ""
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            inside = name == "workbench/"
            parents = []
            continue
        if not inside or not name:
            continue
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = "".join(p for _, p in parents) + name
        entries.add(path)
        if name.endswith("/"):
            parents.append((indent, name))
    return entries


def missing_from_layout(package: Path, layout: str) -> list[str]:
    """One line per module (or package) LAYOUT.md does not list, saying where to add it."""
    listed = layout_entries(layout_block(layout))
    problems = []
    for module in modules(package):
        folder, _, name = module.rpartition("/")
        if module in listed:
            continue
        if folder and f"{folder}/" not in listed:
            continue  # reported once, as its package
        where = f"under `  {folder}/` (indented 4 spaces)" if folder else "under `workbench/` (indented 2 spaces)"
        problems.append(
            f"workbench/LAYOUT.md '## Layout' does not list workbench/{module}: "
            f"add a line `{name}  <what it is for>` {where}"
        )
    for package_dir in sorted({m.rpartition("/")[0] for m in modules(package) if "/" in m}):
        if f"{package_dir}/" not in listed:
            problems.append(
                f"workbench/LAYOUT.md '## Layout' does not list the package workbench/{package_dir}/: "
                f"add `  {package_dir}/  <what it is for>` "
                f"under `workbench/`, then its modules one per line under it (indented 4 spaces)"
            )
    return problems


def stale_in_layout(package: Path, layout: str) -> list[str]:
    """Layout lines naming a module or package that no longer exists."""
    real = set(modules(package)) | {m.rpartition("/")[0] + "/" for m in modules(package) if "/" in m}
    return [
        f"workbench/LAYOUT.md '## Layout' lists workbench/{entry}, which does not exist: remove or rename that line"
        for entry in sorted(layout_entries(layout_block(layout)) - real)
    ]


def test_layout_md_lists_every_module():
    layout = LAYOUT.read_text(encoding="utf-8")
    problems = missing_from_layout(PACKAGE, layout) + stale_in_layout(PACKAGE, layout)
    assert not problems, "\n".join(problems)


def test_the_module_list_lives_only_in_layout_md():
    """The README is for users: a `## Layout` block there would be a second list that drifts."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not re.search(r"^## Layout", readme, re.M), (
        "README.md has a '## Layout' section: move its module lines into workbench/LAYOUT.md's '## Layout' block"
    )


def test_layout_check_names_the_missing_module_and_where_it_goes(tmp_path):
    """The check can fail: a new module, in a package or at the top, is reported with its place."""
    package = tmp_path / "workbench"
    (package / "objectives").mkdir(parents=True)
    for name in (
        "__init__.py",
        "cli.py",
        "session.py",
        "objectives/__init__.py",
        "objectives/itc.py",
        "objectives/masking.py",
    ):
        (package / name).write_text("")
    layout = (
        "# x\n\n## Layout\n\n```\nworkbench/   pkg\n  cli.py   app\n  objectives/   losses\n    itc.py   "
        "itc\n  gone.py   old\ntests/\n```\n"
    )
    problems = missing_from_layout(package, layout)
    assert problems == [
        "workbench/LAYOUT.md '## Layout' does not list workbench/objectives/masking.py: "
        "add a line `masking.py  <what it is for>` under `  objectives/` (indented 4 spaces)",
        "workbench/LAYOUT.md '## Layout' does not list workbench/session.py: add a line `session.py  <what it is for>` "
        "under `workbench/` (indented 2 spaces)",
    ]
    assert stale_in_layout(package, layout) == [
        "workbench/LAYOUT.md '## Layout' lists workbench/gone.py, which does not exist: remove or rename that line"
    ]
    (package / "sweeps").mkdir()
    (package / "sweeps" / "storage.py").write_text("")
    assert "the package workbench/sweeps/" in missing_from_layout(package, layout)[-1]


def test_layout_reads_modules_only_under_the_package_line():
    lines = [
        "workbench/   the package",
        "  data/   data",
        "    shapes.py  gen",
        "  cli.py  app",
        "tests/   pytest",
        "  cli.py  other",
    ]
    assert layout_entries(lines) == {"data/", "data/shapes.py", "cli.py"}


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Layers:
    rank: dict[str, int]  # unit -> its row, 0 = top
    exceptions: set[tuple[str, str]]  # (importing module, imported unit) allowed upward


def read_layers(text: str) -> Layers:
    """INTERFACES.md's ```layers block: one row per layer, top first, units separated by spaces;
    `allow MODULE -> UNIT` lines are the documented upward imports."""
    match = re.search(r"^```layers\n(.*?)^```", text, re.M | re.S)
    assert match, "INTERFACES.md: no ```layers block"
    rank: dict[str, int] = {}
    exceptions: set[tuple[str, str]] = set()
    rows = 0
    for raw in match.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("allow "):
            source, _, target = line.removeprefix("allow ").partition("->")
            exceptions.add((source.strip(), target.strip()))
            continue
        for unit in line.split():
            assert unit not in rank, f"INTERFACES.md layers: {unit!r} is on two rows"
            rank[unit] = rows
        rows += 1
    return Layers(rank, exceptions)


def unit_of(module: str) -> str:
    """The layer unit of a dotted module: `workbench.data.shapes` -> `data`; the package root -> `workbench`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "workbench"


def module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every `workbench` import in the file, function-local ones included:
    a deferred upward import is still an upward edge. `from workbench import x` names the module
    `workbench.x` when x is one, else the package root."""
    name = module_name(path, package)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (package.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    package.parent / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                found.append((node.lineno, sub if is_module else base))
    return [(line, m) for line, m in found if m == package.name or m.startswith(package.name + ".")]


def layer_violations(package: Path, layers: Layers) -> list[str]:
    """One line per import that does not point down the layers (or names a unit the table lacks)."""
    problems: set[str] = set()
    used_exceptions: set[tuple[str, str]] = set()
    edges = {
        (unit_of(module_name(path, package)), unit_of(target))
        for path in package.rglob("*.py")
        for _, target in imported_modules(path, package)
    }
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        source_unit = unit_of(source)
        if source_unit not in layers.rank:
            problems.add(
                f"workbench/{path.relative_to(package).as_posix()}: its unit {source_unit!r} is on no row of the "
                f"```layers block in INTERFACES.md: add it {_placement(source_unit, edges, layers.rank)}"
            )
            continue
        for line, target in imported_modules(path, package):
            target_unit = unit_of(target)
            if target_unit == source_unit:
                continue
            if target_unit not in layers.rank:
                continue  # reported as a source above
            where = f"workbench/{path.relative_to(package).as_posix()}:{line}"
            if (source, target_unit) in layers.exceptions:
                used_exceptions.add((source, target_unit))
                continue
            if layers.rank[target_unit] <= layers.rank[source_unit]:
                direction = "up" if layers.rank[target_unit] < layers.rank[source_unit] else "sideways"
                problems.add(
                    f"{where} imports {target}: {source_unit} -> {target_unit} points {direction} "
                    f"(INTERFACES.md ```layers: a unit imports only units on lower rows)"
                )
    for source, target in sorted(layers.exceptions - used_exceptions):
        problems.add(
            f"INTERFACES.md ```layers: `allow {source} -> {target}` is no longer needed (no such import): remove it"
        )
    real_units = {unit_of(module_name(p, package)) for p in package.rglob("*.py")}
    for unit in sorted(set(layers.rank) - real_units):
        problems.add(f"INTERFACES.md ```layers names {unit!r}, which is no module or package of workbench/: remove it")
    return sorted(problems)


def _placement(unit: str, edges: set[tuple[str, str]], rank: dict[str, int]) -> str:
    """Where a unit the table lacks may go: above every row it imports, below every row importing it."""
    below = sorted((t for s, t in edges if s == unit and t in rank), key=rank.get)
    above = sorted((s for s, t in edges if t == unit and s in rank), key=rank.get)
    limits = ([f"above the row of `{below[0]}` (it imports it)"] if below else []) + (
        [f"below the row of `{above[-1]}` (which imports it)"] if above else []
    )
    return "on a row " + " and ".join(limits) if limits else "on the row of the layer it belongs to"


def test_imports_point_down_the_layers_of_interfaces_md():
    layers = read_layers(INTERFACES.read_text(encoding="utf-8"))
    problems = layer_violations(PACKAGE, layers)
    assert not problems, "\n".join(problems)


def test_stated_layering_keeps_the_documented_shape():
    """The picture INTERFACES.md draws in words: cli -> sweeps -> train -> models/objectives/data."""
    rank = read_layers(INTERFACES.read_text(encoding="utf-8")).rank
    assert rank["__main__"] < rank["cli"] < rank["sweeps"] < rank["train"] < rank["pretrainer"]
    assert rank["pretrainer"] < min(rank["models"], rank["objectives"], rank["data"])
    assert rank["reports"] < rank["pretrainer"]  # the attention report rebuilds a run's model
    assert max(rank["models"], rank["objectives"], rank["data"]) < rank["config"] < rank["errors"]


@pytest.fixture
def toy_package(tmp_path) -> Path:
    package = tmp_path / "workbench"
    for name, text in {
        "__init__.py": "__version__ = '1'\n",
        "cli.py": "from workbench import train\n",
        "train.py": "from workbench.data import load\n",
        "data/__init__.py": "",
        "data/load.py": "from workbench.errors import Bad\nfrom . import other\n",
        "data/other.py": "",
        "errors.py": "",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


TOY_LAYERS = "```layers\ncli\ntrain\ndata\nerrors workbench\n```\n"


def test_layer_check_passes_downward_imports(toy_package):
    assert layer_violations(toy_package, read_layers(TOY_LAYERS)) == []


def test_layer_check_fails_on_an_upward_import_even_a_deferred_one(toy_package):
    (toy_package / "data" / "other.py").write_text("def f():\n    from workbench.train import run\n")
    assert layer_violations(toy_package, read_layers(TOY_LAYERS)) == [
        "workbench/data/other.py:2 imports workbench.train: data -> train points up "
        "(INTERFACES.md ```layers: a unit imports only units on lower rows)"
    ]
    documented = TOY_LAYERS.replace("```\n", "allow workbench.data.other -> train  # why\n```\n")
    assert layer_violations(toy_package, read_layers(documented)) == []


def test_layer_check_fails_on_a_sibling_import_an_unplaced_module_and_a_stale_row(toy_package):
    (toy_package / "session.py").write_text("from workbench import cli\n")
    (toy_package / "errors.py").write_text("import workbench\n")
    layers = read_layers("```layers\ncli\ntrain\ndata\nerrors workbench\nsweeps\n```\n")
    assert layer_violations(toy_package, layers) == [
        "INTERFACES.md ```layers names 'sweeps', which is no module or package of workbench/: remove it",
        "workbench/errors.py:1 imports workbench: errors -> workbench points sideways "
        "(INTERFACES.md ```layers: a unit imports only units on lower rows)",
        "workbench/session.py: its unit 'session' is on no row of the ```layers block in INTERFACES.md: "
        "add it on a row above the row of `cli` (it imports it)",
    ]


def test_layer_check_flags_an_exception_no_longer_needed(toy_package):
    layers = read_layers(TOY_LAYERS.replace("```\n", "allow workbench.data.load -> cli\n```\n"))
    assert layer_violations(toy_package, layers) == [
        "INTERFACES.md ```layers: `allow workbench.data.load -> cli` is no longer needed (no such import): remove it"
    ]
