"""pyproject.toml's ranges and requirements.lock's exact versions must agree: a fresh clone
installs the lock (`make setup`), so a range the lock falls outside would test one set of
packages and ship another."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        listed += extra
    return [Requirement(text) for text in listed]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_is_locked_inside_its_range():
    pins = _lock()
    environment = default_environment()
    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}"
        )


def test_every_dependency_has_an_upper_bound():
    for requirement in _requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {"<", "<=", "==", "~="}, f"{requirement.name}: no upper bound in pyproject.toml"


def _runtime_closure() -> set[str]:
    """Every distribution `pip install .` brings: project.dependencies and, recursively, what they require."""
    import importlib.metadata as metadata

    environment = {**default_environment(), "extra": ""}
    todo = [
        Requirement(text) for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker is not None and not requirement.marker.evaluate(environment)):
            continue
        seen.add(name)
        try:
            todo += [Requirement(text) for text in metadata.requires(requirement.name) or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


def test_what_a_run_imports_comes_with_the_runtime_dependencies_alone(shapes_tiny, tmp_path):
    """`make demo` installs without the dev extras: a module a run imports (ours or a library's,
    e.g. MLflow's system metrics needing psutil) must come from project.dependencies' closure."""
    import importlib.metadata as metadata
    import json
    import subprocess
    import sys

    from tiny_config import tiny_run

    overrides = tiny_run(shapes_tiny, f"sqlite:///{tmp_path}/m.db", tmp_path / "out")
    script = (
        "import json, sys\n"
        "from workbench import train\n"
        "from workbench.config import load_config\n"
        f"train.run(load_config('base', {[str(o) for o in overrides]!r}), progress=False)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    owners = metadata.packages_distributions()
    closure = _runtime_closure() | {"workbench"}
    missing = {
        dist: module
        for module in modules
        for dist in map(canonicalize_name, owners.get(module, []))
        if dist not in closure
    }
    assert not missing, f"a run imports modules of {sorted(missing)} ({missing}), not in project.dependencies"
