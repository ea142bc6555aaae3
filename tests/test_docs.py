"""The user docs stay true: README.md stays short, starts with the two commands, and every
relative link, anchor, `make` target and `workbench` command or option the docs name exists.

Checked files: README.md and the documents it links to (benchmarks/RESULTS.md,
workbench/REFERENCE.md, workbench/LAYOUT.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from workbench.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [
    README,
    ROOT / "benchmarks" / "RESULTS.md",
    ROOT / "workbench" / "REFERENCE.md",
    ROOT / "workbench" / "LAYOUT.md",
]
MAX_README_LINES = 350  # issue 27: a README for users; measured results live in benchmarks/RESULTS.md

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


# --------------------------------------------------------------------------- links and anchors
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a file's headings (code blocks skipped: a `# comment` there is no heading)."""
    prose = FENCE.sub("", markdown)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", prose, re.M)}


def broken_links(path: Path) -> list[str]:
    """One line per relative link whose file is missing or whose #anchor is no heading there."""
    problems = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto: — not checked offline
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        if not resolved.exists():
            problems.append(f"{name}: link ({target}): no file {file}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{name}: link ({target}): no heading with anchor #{anchor} in {file or name}")
    return problems


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    problems = [line for doc in DOCS for line in broken_links(doc)]
    assert not problems, "\n".join(problems)


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## The `base` budget: 3 seeds\n\n```\n# not a heading\n```\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md#the-base-budget-3-seeds) [gone](missing.md) [bad](other.md#not-a-heading) "
        "[self](#top) [web](https://example.org/x)\n\n# Top\n"
    )
    assert broken_links(doc) == [
        "doc.md: link (missing.md): no file missing.md",
        "doc.md: link (other.md#not-a-heading): no heading with anchor #not-a-heading in other.md",
    ]


# --------------------------------------------------------------------------- the README itself
def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move measured results to "
        "benchmarks/RESULTS.md and details to workbench/REFERENCE.md"
    )
    first_block = FENCE.search(text).group(1).splitlines()
    assert [line.split()[:2] for line in first_block[:2]] == [["make", "demo"], ["make", "test"]]


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))


def test_every_make_target_the_readme_names_exists():
    named = set(re.findall(r"`make ([a-z][\w-]*)", README.read_text(encoding="utf-8")))
    named |= {
        m
        for block in FENCE.findall(README.read_text(encoding="utf-8"))
        for m in re.findall(r"^make (\S+)", block, re.M)
    }
    assert {"demo", "test", "lint", "format"} <= named
    assert named <= make_targets(), f"README.md names make targets the Makefile lacks: {sorted(named - make_targets())}"


# --------------------------------------------------------------------------- workbench commands
def command_lines(markdown: str) -> list[str]:
    """`workbench ...` command lines: in code blocks (continuation lines joined) and inline code."""
    lines = []
    for block in FENCE.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").strip()
            if line.startswith("workbench "):
                lines.append(line.split("#", 1)[0])
    prose = FENCE.sub("", markdown)
    lines += [m.replace("\n", " ") for m in re.findall(r"`(workbench [^`]+)`", prose)]
    return lines


def unknown_in(line: str, root) -> list[str]:
    """What a command line names that the CLI lacks: a command, a subcommand or an option.
    `root` is the app's click group (typer's own click: groups are told by their `commands`)."""
    words = line.replace("[", " ").replace("]", " ").split()[1:]
    command = root
    options = {opt for p in root.params for opt in p.opts + p.secondary_opts}
    for word in words:
        if word in ("...", "…"):
            continue  # "the rest of a command line"
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            if flag not in options | {"--help", "-h"}:
                return [f"{line!r}: {flag} is no option of `{command.name or 'workbench'}`"]
        elif hasattr(command, "commands"):
            if word not in command.commands:
                return [f"{line!r}: {word!r} is no command of `{command.name or 'workbench'}`"]
            command = command.commands[word]
            options = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    return []


def test_every_workbench_command_and_option_in_the_docs_exists():
    root = typer.main.get_command(app)
    problems = [
        f"{doc.relative_to(ROOT)}: {p}"
        for doc in DOCS
        for line in command_lines(doc.read_text(encoding="utf-8"))
        for p in unknown_in(line, root)
    ]
    assert not problems, "\n".join(problems)


def test_the_command_check_can_fail():
    root = typer.main.get_command(app)
    assert unknown_in("workbench run --quick --set train.steps=5", root) == []
    assert unknown_in("workbench --debug ...", root) == []
    assert unknown_in("workbench shard x", root) == ["'workbench shard x': 'shard' is no command of `workbench`"]
    assert unknown_in("workbench sweep scl --slotz 2", root) == [
        "'workbench sweep scl --slotz 2': --slotz is no option of `sweep`"
    ]
    assert unknown_in("workbench data shards x", root) == [
        "'workbench data shards x': 'shards' is no command of `data`"
    ]
