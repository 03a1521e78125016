"""One source of truth for versions: the Lambda zip's pins agree with pyproject's ranges (fast, no network).

The pins live in pyproject.toml's `[tool.quest.lambda]`, the ranges in `[project].dependencies`; these
tests keep the two consistent and keep both free of what the code never imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra_pulumi.package import (
    PROJECT_PACKAGES,
    PROJECT_ROOT,
    STANDS_IN_FOR,
    PackageError,
    PackageSpec,
    input_hash,
    lambda_pins,
    project_files,
    project_ranges,
)

# Declared only to bound prefect's own dependencies (see the comments in pyproject.toml): never imported.
BOUNDS_ONLY = frozenset({"fastapi", "sqlalchemy"})


def imported_modules(paths: Iterable[Path]) -> set[str]:
    """Top-level names of the absolute imports in these Python files."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def distributions_of(modules: Iterable[str]) -> set[str]:
    """Canonical names of the installed distributions providing these modules (stdlib: none)."""
    providers = importlib.metadata.packages_distributions()
    return {canonicalize_name(dist) for module in modules for dist in providers.get(module, ())}


def declared_name(pin: Requirement) -> str:
    """The [project] dependency a zip pin answers for (prefect-client answers for prefect)."""
    name = canonicalize_name(pin.name)
    return STANDS_IN_FOR.get(name, name)


def _pins() -> list[Requirement]:
    requirements, no_deps = lambda_pins(PROJECT_ROOT)
    return [Requirement(r) for r in (*requirements, *no_deps)]


def _ranges() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, project_ranges(PROJECT_ROOT))}


def _shipped_python_files() -> list[Path]:
    return [path for _, path in project_files(PROJECT_ROOT, PROJECT_PACKAGES) if path.suffix == ".py"]


def test_every_pin_is_exact_and_named_once():
    pins = _pins()
    assert pins, "pyproject.toml [tool.quest.lambda] pins nothing"
    for pin in pins:
        (spec,) = pin.specifier  # exactly one specifier
        assert spec.operator == "==" and "*" not in spec.version, f"{pin} is not an exact pin"
        assert not pin.marker, f"{pin}: the zip has one platform, a marker has nothing to choose"
    names = [canonicalize_name(p.name) for p in pins]
    assert len(names) == len(set(names)), names


def test_every_pin_satisfies_its_declared_range():
    ranges = _ranges()
    for pin in _pins():
        declared = ranges.get(declared_name(pin))
        assert declared is not None, (
            f"{pin} is shipped but {declared_name(pin)} is not in [project].dependencies"
        )
        (version,) = (s.version for s in pin.specifier)
        assert declared.specifier.contains(version, prereleases=True), f"{pin} is outside {declared}"


def test_every_declared_dependency_the_shipped_code_imports_is_pinned():
    imported = distributions_of(imported_modules(_shipped_python_files()))
    runtime = imported & set(_ranges())
    # The flows' own runtime imports (a scan that finds none of them would prove nothing).
    assert {"prefect", "pandas", "httpx", "pydantic", "pydantic-settings", "boto3"} <= runtime
    pinned = {declared_name(pin) for pin in _pins()}
    assert runtime <= pinned, f"imported at runtime but not pinned for the zip: {sorted(runtime - pinned)}"


def test_nothing_is_pinned_or_declared_that_the_code_never_imports():
    # Pins: only what the shipped code imports (an unused distribution is weight and attack surface).
    shipped = distributions_of(imported_modules(_shipped_python_files()))
    unused_pins = {declared_name(pin) for pin in _pins()} - shipped
    assert not unused_pins, f"pinned for the zip but never imported by it: {sorted(unused_pins)}"
    # Declared: imported somewhere in the project (flows, dev kit, Pulumi program), or a stated bound.
    sources = [
        *PROJECT_ROOT.joinpath("flows").rglob("*.py"),
        *PROJECT_ROOT.joinpath("infra_pulumi").rglob("*.py"),
    ]
    used = distributions_of(imported_modules(sources))
    unused = set(_ranges()) - used - BOUNDS_ONLY
    assert not unused, f"declared in [project].dependencies but never imported: {sorted(unused)}"


def test_ranges_can_be_pip_constraints():
    """pip refuses extras in a constraints file, and the zip's build passes the ranges as one."""
    assert not [r for r in _ranges().values() if r.extras]


def test_prefect_aws_is_not_shipped_until_something_imports_it():
    """Issue 10: prefect-aws was bundled and declared but unused (issue 11 brings its credentials block)."""
    names = {canonicalize_name(p.name) for p in _pins()} | set(_ranges())
    assert not names & {"prefect-aws", "mypy-boto3-s3", "mypy-boto3-secretsmanager", "tenacity"}


# --------------------------------------------------------------------------- the build reads them


def _project_with_pins(root: Path, pins: str, ranges: str = '"pandas>=2"') -> Path:
    (root / "flows").mkdir(parents=True, exist_ok=True)
    (root / "flows" / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "quest-pipeline"\nversion = "9.9"\ndependencies = [{ranges}]\n'
        f"[tool.quest.lambda]\nrequirements = [{pins}]\n"
    )
    return root


def test_the_spec_takes_its_pins_and_constraints_from_the_sources_pyproject(tmp_path):
    spec = PackageSpec(source_root=_project_with_pins(tmp_path, '"pandas==2.2.3"'))
    assert spec.requirements == ("pandas==2.2.3",)
    assert spec.no_deps_requirements == ()
    assert spec.constraints == ("pandas>=2",)


def test_editing_a_pin_or_a_range_changes_the_cache_key(tmp_path):
    root = _project_with_pins(tmp_path, '"pandas==2.2.3"')
    before = input_hash(PackageSpec(source_root=root))
    _project_with_pins(root, '"pandas==2.3.0"')
    after_pin = input_hash(PackageSpec(source_root=root))
    _project_with_pins(root, '"pandas==2.3.0"', ranges='"pandas>=2.3"')
    after_range = input_hash(PackageSpec(source_root=root))
    assert len({before, after_pin, after_range}) == 3


def test_a_pyproject_without_pins_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    with pytest.raises(PackageError, match=r"\[tool.quest.lambda\]"):
        PackageSpec(source_root=tmp_path)
