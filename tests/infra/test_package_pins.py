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


def _no_deps_pins() -> list[Requirement]:
    return [Requirement(r) for r in lambda_pins(PROJECT_ROOT)[1]]


def _no_deps_requirements() -> dict[str, Requirement]:
    """What the no-deps pins themselves require (their Requires-Dist, as installed here).

    The zip installs them without their dependencies; the ones they import at run time are pinned
    beside them and answer for these requirements instead of a range in [project].dependencies.
    """
    found: dict[str, Requirement] = {}
    for pin in _no_deps_pins():
        for line in importlib.metadata.requires(pin.name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                found[canonicalize_name(requirement.name)] = requirement
    return found


def _no_deps_python_files() -> list[Path]:
    """The installed sources of the no-deps pins (what the zip ships of them)."""
    files: list[Path] = []
    for pin in _no_deps_pins():
        distribution = importlib.metadata.distribution(pin.name)
        files += [
            Path(str(distribution.locate_file(f))) for f in distribution.files or () if f.suffix == ".py"
        ]
    return files


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
    of_no_deps = _no_deps_requirements()
    for pin in _pins():
        declared = ranges.get(declared_name(pin)) or of_no_deps.get(canonicalize_name(pin.name))
        assert declared is not None, (
            f"{pin} is shipped but {declared_name(pin)} is neither in [project].dependencies nor "
            "required by a no-deps pin"
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
    # Pins: only what the shipped code imports (an unused distribution is weight and attack surface),
    # the project's own or a no-deps pin's (its dependencies are not installed for it).
    shipped = distributions_of(imported_modules([*_shipped_python_files(), *_no_deps_python_files()]))
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


def test_prefect_aws_is_shipped_without_its_dependencies_because_the_worker_imports_it():
    """Issue 11: the worker's AwsCredentials block. prefect-aws declares full prefect (prefect-client
    stands in), so it is a no-deps pin; the stubs and tenacity it imports are pinned beside it."""
    assert "prefect-aws" in distributions_of(imported_modules(_shipped_python_files()))
    (prefect_aws,) = _no_deps_pins()
    assert canonicalize_name(prefect_aws.name) == "prefect-aws"
    # The development install runs the version the zip ships (the tests exercise that one).
    assert prefect_aws.specifier.contains(importlib.metadata.version("prefect-aws"))
    required = _no_deps_requirements()
    assert "prefect" in required, "prefect-aws no longer declares prefect: it may not need --no-deps"
    pinned = {canonicalize_name(p.name) for p in _pins()}
    assert {"mypy-boto3-s3", "mypy-boto3-secretsmanager", "tenacity"} <= pinned
    # Never the packages an aiobotocore-based prefect-aws (0.5.14 on) would bring.
    assert not pinned & {"aiobotocore", "aiohttp", "prefect"}


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
