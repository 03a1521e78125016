"""The Lambda package: real pip builds (slow: they download from the package index; CI runs them).

At most two full builds per session: one into the git-ignored cache (a cache hit when the inputs
are unchanged), one fresh rebuild for the reproducibility check. The import check unpacks the zip
and imports from it in `python -I -S`, so nothing but the zip and the standard library is visible.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra_pulumi.package import (
    DEFAULT_CACHE_DIR,
    MAX_UNZIPPED_BYTES,
    PROJECT_ROOT,
    STANDS_IN_FOR,
    ZIP_EPOCH,
    PackageError,
    PackageSpec,
    build,
    constraints_text,
    describe_zip,
    input_hash,
    pip_commands,
    project_ranges,
    write_zip,
)

# Development, test and deploy-time distributions: never in the function's zip.
DEV_DISTRIBUTIONS = frozenset(
    {"pytest", "moto", "hypothesis", "ruff", "mypy", "pulumi", "pulumi-aws", "prefect"}
)

RUNTIME_IMPORTS = """
import importlib.metadata, json, sys
assert not [p for p in sys.path if "site-packages" in p], sys.path
import flows.runtime.handler as entry
kinds = [
    entry.event_kind({"Records": [{"eventSource": "aws:sqs"}]}),
    entry.event_kind({"flow_run_id": "x"}),
    entry.event_kind({"poll_work_pool": "pool"}),
    entry.event_kind({"source": "aws.events", "detail-type": "Scheduled Event"}),
]
import flows.settings, flows.io.store, flows.ingest, flows.reports, flows.runtime.sqs, flows.worker
import flows.runtime.flow_run, flows.reconcile, flows.io.lambda_logs, flows.core.invoke_failures
from prefect.workers.base import BaseWorker
from prefect_aws import AwsCredentials  # installed --no-deps over prefect-client (issue 11)
session = flows.worker.aws_session(AwsCredentials())  # an empty block: boto3's default chain
import pandas, httpx, boto3, prefect, prefect_aws
collections = sorted(e.value for e in importlib.metadata.entry_points(group="prefect.collections"))
print(json.dumps({
    "kinds": kinds,
    "worker_is_base_worker": issubclass(flows.worker.LambdaWorker, BaseWorker),
    "files": {m.__name__: m.__file__ for m in (flows, pandas, prefect, httpx, boto3, prefect_aws)},
    "template_variables": sorted(flows.worker.default_base_job_template()["variables"]["properties"]),
    "session": type(session).__module__,
    "collections": collections,
}))
"""


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> Path:
    """A snapshot of the project's sources: others may edit `flows/` while the session runs."""
    root = tmp_path_factory.mktemp("sources")
    shutil.copytree(PROJECT_ROOT / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.fixture(scope="session")
def spec(sources) -> PackageSpec:
    """The spec for the running interpreter (3.11 here), pins read from the snapshot's pyproject."""
    return PackageSpec.for_running_interpreter(source_root=sources)


@pytest.fixture(scope="session")
def built(spec):
    """The package for the running interpreter, from the cache when unchanged."""
    return build(spec, cache_dir=DEFAULT_CACHE_DIR)


def zip_distributions(path: Path) -> dict[str, Message]:
    """Canonical name -> METADATA headers of each distribution installed at the zip's top level."""
    with zipfile.ZipFile(path) as zf:
        return {
            canonicalize_name(meta["Name"]): meta
            for name in zf.namelist()
            if name.count("/") == 1 and name.endswith(".dist-info/METADATA")
            for meta in [HeaderParser().parsestr(zf.read(name).decode())]
        }


def dependency_closure(
    roots: Iterable[Requirement], no_deps: Iterable[Requirement], metadata: Mapping[str, Message]
) -> set[str]:
    """What pip must install for these requirements on this interpreter: the zip's expected contents.

    Follows Requires-Dist (with the extras asked for, markers for the running environment); a
    distribution missing from `metadata` is still named, so a comparison shows it.
    """
    environment: dict[str, str] = dict(default_environment())
    todo = list(roots)
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        meta = metadata.get(name)
        for line in (meta.get_all("Requires-Dist") or []) if meta is not None else []:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({**environment, "extra": extra}) for extra in extras
            ):
                todo.append(dependency)
    return {name for name, _ in seen} | {canonicalize_name(r.name) for r in no_deps}


@pytest.mark.slow
def test_package_builds_lean_and_under_the_limit(built):
    assert built.path.is_file() and built.zipped_bytes == built.path.stat().st_size
    assert 0 < built.unzipped_bytes < MAX_UNZIPPED_BYTES
    with zipfile.ZipFile(built.path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names) and len(names) == built.files
    assert sum(i.file_size for i in infos) == built.unzipped_bytes
    assert {i.date_time for i in infos} == {ZIP_EPOCH}
    assert not [n for n in names if "__pycache__/" in n or n.endswith(".pyc") or "/tests/" in n]
    assert not [n for n in names if n.endswith((".dist-info/RECORD", ".dist-info/INSTALLER"))]
    assert not [n for n in names if n.startswith("bin/")]
    top = {n.split("/", 1)[0] for n in names}
    assert {"flows", "prefect", "pandas", "httpx", "pydantic", "pydantic_settings", "boto3"} <= top
    # prefect-client, not the full prefect distribution (its server UI alone is tens of MB).
    assert any(n.startswith("prefect_client-") for n in top)
    assert not any(n.startswith("prefect-") or n.startswith("prefect_3") for n in top)
    assert "flows/runtime/handler.py" in names and "infra_pulumi/__init__.py" not in names
    # No test or development code: no dev kit, no tests package, no test-only distributions.
    assert not [n for n in names if n.startswith(("flows/devkit/", "tests/"))]
    assert not {
        t for t in top if t.split("-")[0].lower() in ("moto", "pytest", "hypothesis", "ruff", "pulumi")
    }
    assert not top & {"devkit", "tests", "moto", "pytest", "hypothesis", "ruff", "mypy"}
    # prefect-aws for the worker's AwsCredentials block (issue 11), without the aiobotocore stack.
    assert "prefect_aws" in top and not top & {"aiobotocore", "aiohttp"}
    assert not top & {"pulumi", "pulumi_aws", "infra_pulumi", "_pytest"}
    assert "flows/core/names.py" in names and "flows/io/store/s3.py" in names


@pytest.mark.slow
def test_zip_holds_exactly_the_pins_and_their_dependencies(built, spec):
    """Every distribution inside is there because a pin needs it: nothing unused, nothing for dev or test."""
    shipped = zip_distributions(built.path)
    expected = dependency_closure(
        map(Requirement, spec.requirements or ()), map(Requirement, spec.no_deps_requirements or ()), shipped
    )
    assert set(shipped) == expected | {"quest-pipeline"}
    assert not set(shipped) & DEV_DISTRIBUTIONS


@pytest.mark.slow
def test_zip_versions_obey_the_project_ranges(built, spec):
    """The ranges in [project].dependencies hold inside the zip too, transitive distributions included."""
    shipped = {name: meta["Version"] for name, meta in zip_distributions(built.path).items()}
    for name, version in shipped.items():
        for requirement in map(Requirement, spec.constraints or ()):
            if canonicalize_name(requirement.name) == STANDS_IN_FOR.get(name, name):
                assert requirement.specifier.contains(version, prereleases=True), (name, version, requirement)
    for pin in map(Requirement, spec.requirements or ()):
        assert pin.specifier.contains(shipped[canonicalize_name(pin.name)]), pin  # the pinned version


@pytest.mark.slow
def test_flows_import_from_the_zip_alone(built, tmp_path):
    with zipfile.ZipFile(built.path) as zf:
        zf.extractall(tmp_path / "task")
    code = f"import sys; sys.path.insert(0, {str(tmp_path / 'task')!r})\n" + RUNTIME_IMPORTS
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kinds"] == ["sqs", "flow_run", "poll", "ingest"]
    assert report["worker_is_base_worker"] is True
    assert all(path.startswith(str(tmp_path / "task")) for path in report["files"].values()), report
    assert "flows.worker" in report["collections"]  # the worker type registers from the zip too
    assert {"aws_credentials", "invoke_failure_queue_url", "log_group_name"} <= set(
        report["template_variables"]
    )
    assert report["session"].startswith("boto3")


@pytest.mark.slow
def test_two_builds_are_byte_identical_and_the_cache_is_hit(built, sources, tmp_path):
    spec = PackageSpec.for_running_interpreter(source_root=sources)
    fresh = build(spec, cache_dir=tmp_path / "cache", use_cache=False)
    assert fresh.sha256 == built.sha256
    assert fresh.unzipped_bytes == built.unzipped_bytes
    again = build(spec, cache_dir=DEFAULT_CACHE_DIR)
    assert again.cached and again.path == built.path and again.sha256 == built.sha256
    assert describe_zip(built.path).sha256 == built.sha256


# --------------------------------------------------------------------------- fast, no network


def _tiny_project(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "__init__.py").write_text("VALUE = 1\n")
    (root / "flows" / "__pycache__").mkdir()
    (root / "flows" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "quest-pipeline"\nversion = "9.9"\n'
        '[project.entry-points."prefect.collections"]\nquest = "flows.worker"\n'
    )
    return root


def _tiny_spec(root: Path, **overrides) -> PackageSpec:
    return PackageSpec(requirements=(), no_deps_requirements=(), source_root=root, **overrides)


def test_project_only_build_is_deterministic_and_carries_its_dist_info(tmp_path):
    spec = _tiny_spec(_tiny_project(tmp_path / "proj"))
    first = build(spec, cache_dir=tmp_path / "a")
    second = build(spec, cache_dir=tmp_path / "b", use_cache=False)
    assert first.sha256 == second.sha256 and not first.cached
    with zipfile.ZipFile(first.path) as zf:
        names = zf.namelist()
        entry_points = zf.read("quest_pipeline-9.9.dist-info/entry_points.txt").decode()
    assert names == sorted(names)
    assert "flows/__init__.py" in names and not [n for n in names if "__pycache__" in n]
    assert "[prefect.collections]\nquest = flows.worker" in entry_points
    assert build(spec, cache_dir=tmp_path / "a").cached


def test_input_hash_follows_sources_and_target(tmp_path):
    root = _tiny_project(tmp_path / "proj")
    before = input_hash(_tiny_spec(root))
    assert input_hash(_tiny_spec(root, python_version="3.11")) != before
    (root / "flows" / "__init__.py").write_text("VALUE = 2\n")
    assert input_hash(_tiny_spec(root)) != before


def test_over_the_limit_fails_and_caches_nothing(tmp_path):
    spec = _tiny_spec(_tiny_project(tmp_path / "proj"), max_unzipped_bytes=10)
    with pytest.raises(PackageError, match="over the"):
        build(spec, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("runner-*"))


def test_pip_targets_the_lambda_platform_binary_only(tmp_path):
    spec = PackageSpec()
    full, no_deps = pip_commands(
        spec, tmp_path / "site", python="python", constraints_file=tmp_path / "c.txt"
    )
    assert full[full.index("--python-version") + 1] == "3.12"
    assert "--only-binary=:all:" in full and "manylinux2014_x86_64" in full
    assert full[full.index("--constraint") + 1] == str(tmp_path / "c.txt")
    assert full[-len(spec.requirements or ()) :] == list(spec.requirements or ())
    assert any(r.startswith("prefect-client==") for r in full)
    assert not any(r.startswith(("prefect==", "prefect-aws")) for r in full)
    # prefect-aws (issue 11) in a call of its own, without its dependencies (it declares full prefect).
    assert no_deps[-2:] == ["--no-deps", "prefect-aws==0.5.13"] and "--only-binary=:all:" in no_deps


def test_no_deps_pins_get_their_own_pip_call(tmp_path):
    spec = PackageSpec(requirements=("a==1",), no_deps_requirements=("b==2",), constraints=())
    full, no_deps = pip_commands(spec, tmp_path / "site", python="python")
    assert full[-1] == "a==1" and "--no-deps" not in full and "--constraint" not in full
    assert no_deps[-2:] == ["--no-deps", "b==2"]


def test_the_project_ranges_become_the_constraints_file():
    spec = PackageSpec()
    assert spec.constraints == project_ranges(PROJECT_ROOT)
    assert constraints_text(spec).splitlines() == list(project_ranges(PROJECT_ROOT))
    assert "fastapi<0.151" in constraints_text(spec).splitlines()


def test_write_zip_fixes_time_and_mode(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    write_zip([("b.txt", b"b"), ("a/run.sh", script)], tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert list(infos) == ["a/run.sh", "b.txt"]
    assert (infos["a/run.sh"].external_attr >> 16) & 0o777 == 0o755
    assert (infos["b.txt"].external_attr >> 16) & 0o777 == 0o644
    assert all(i.date_time == ZIP_EPOCH for i in infos.values())


def test_prebuilt_zip_is_checked(tmp_path):
    with pytest.raises(PackageError, match="no Lambda package"):
        describe_zip(tmp_path / "missing.zip")
    (tmp_path / "bad.zip").write_text("x")
    with pytest.raises(PackageError, match="not a zip"):
        describe_zip(tmp_path / "bad.zip")
