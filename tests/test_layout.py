"""The house rules of `flows/`, checked on the source: imports run one way, core stays pure.

    core  <-  io  <-  flows (settings, ingest, reports, ...)  <-  runtime / worker / cli      devkit

Every import counts, including the ones inside functions (cheap cold starts put many there).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "flows"

# Layer of each part of `flows/`; a module may import only its own layer or lower ones.
LAYERS = {"core": 0, "io": 1, "flows": 2, "runtime": 3, "edge": 3, "devkit": 4}
EDGE_MODULES = {"flows.cli", "flows.worker"}
# What core may not use: it is pure (no I/O clients, no orchestration, no infrastructure).
IMPURE = ("prefect", "httpx", "boto3", "botocore", "pulumi", "pulumi_aws", "moto", "socket", "subprocess")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    if module in EDGE_MODULES:
        return "edge"
    pieces = module.split(".")
    if len(pieces) >= 2 and pieces[1] in LAYERS:
        return pieces[1]
    return "flows"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


MODULES = {_module_name(p): p for p in sorted(FLOWS.rglob("*.py"))}


def _targets(module: str) -> set[str]:
    """The flows modules `module` imports (an imported name that is a module counts as that module)."""
    return {name for name in _imports(MODULES[module]) if name in MODULES and name != module}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    mine = LAYERS[_part(module)]
    for target in _targets(module):
        if module == "flows.cli" and _part(target) == "devkit":
            continue  # `quest demo` only, imported inside its command; the dev kit is never shipped
        assert LAYERS[_part(target)] <= mine, f"{module} ({_part(module)}) imports {target} ({_part(target)})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_flows_never_import_the_infrastructure_or_the_tests(module):
    bad = {n for n in _imports(MODULES[module]) if n.split(".")[0] in ("infra_pulumi", "tests")}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) == "core"))
def test_core_is_pure(module):
    bad = {n for n in _imports(MODULES[module]) if n.split(".")[0] in IMPURE}
    assert not bad, f"{module} is core but imports {sorted(bad)}"


def test_every_core_module_has_its_own_test_module():
    cores = sorted(m.rsplit(".", 1)[1] for m in MODULES if _part(m) == "core" and not m.endswith(".core"))
    tests = {p.stem for p in (ROOT / "tests" / "core").glob("test_*.py")}
    missing = [c for c in cores if not any(t == f"test_{c}" or t.startswith(f"test_{c}_") for t in tests)]
    assert not missing, f"core modules without tests/core/test_<module>.py: {missing}"


# tests/ mirrors the code: a folder per layer of `flows/`, the Pulumi program, and the end-to-end
# runs. The flows and settings at the top of `flows/` are tested in `pipeline/` (a folder named
# `flows` would shadow the package on the path pytest prepends). Helpers sit at the top.
TEST_FOLDERS = {"core", "io", "pipeline", "runtime", "worker", "devkit", "infra", "e2e"}
FOLDER_OF_LAYER = {"flows": "pipeline", "edge": "worker"}


def test_tests_mirror_the_layout():
    tests = ROOT / "tests"
    stray = sorted(p.name for p in tests.glob("test_*.py") if p.name != "test_layout.py")
    assert not stray, f"test modules belong in a folder named for what they test: {stray}"
    folders = {p.parent.name for p in tests.glob("*/test_*.py")}
    assert folders <= TEST_FOLDERS, f"unexpected test folders: {sorted(folders - TEST_FOLDERS)}"
    layers = {FOLDER_OF_LAYER.get(_part(m), _part(m)) for m in MODULES}
    assert layers <= TEST_FOLDERS, f"a layer of flows/ without a test folder: {sorted(layers - TEST_FOLDERS)}"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "test module names must be unique (pytest's rootdir import mode)"


def test_the_layout_check_sees_a_violation():
    """The rule itself can fail: io importing a flow is caught."""
    assert LAYERS[_part("flows.ingest")] > LAYERS[_part("flows.io.store")]
    assert _part("flows.core.names") == "core" and _part("flows.worker") == "edge"


def test_boto3_clients_come_from_one_factory():
    """Only `flows.io.aws` makes boto3 clients (the dev kit, never shipped, wires moto itself)."""
    makers = {
        m
        for m, path in MODULES.items()
        if _part(m) != "devkit" and any(n == "boto3" or n.startswith("boto3.") for n in _imports(path))
    }
    assert makers == {"flows.io.aws"}


# One path from the edge to the work: a flow calls its tasks, and only the plain entry calls the
# function behind a task. `.fn` anywhere else is a per-call mode switch coming back.
PLAIN_ENTRY = "flows.runtime.plain"


def _fn_calls(path: Path) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr == "fn"
    ]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != PLAIN_ENTRY))
def test_only_the_plain_entry_bypasses_prefect(module):
    lines = _fn_calls(MODULES[module])
    assert not lines, (
        f"{module} calls a task's or flow's `.fn` (line {lines}): call the task, or use {PLAIN_ENTRY}"
    )


def test_the_plain_entry_check_can_fail():
    assert _fn_calls(MODULES[PLAIN_ENTRY]), "the plain entry calls .fn; if not, drop PLAIN_ENTRY"
