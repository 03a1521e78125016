"""Build the runner Lambda's zip without Docker: `pip install --target` for the Lambda platform.

Why this shape:
- Full `prefect` is 190+ MB and, with pandas, over Lambda's 250 MB unzipped limit; the function only
  needs the client side, so the zip carries `prefect-client`.
- Versions are chosen in one file: the exact pins in pyproject.toml's `[tool.quest.lambda]`, and the
  ranges of `[project].dependencies` as pip constraints, so a transitive dependency of the zip obeys
  the same bounds as a development install (tests/infra/test_package_pins.py checks pins against ranges).
- boto3/botocore ARE bundled although the Lambda runtime ships a copy: the runtime's copy changes
  under us without notice, and bundling makes the zip's behaviour a function of its inputs alone.
- Same inputs → byte-identical zip (sorted entries, fixed timestamps and modes, no bytecode, no
  install-time records), so `pulumi up` sees an unchanged `source_code_hash` and does not redeploy.
- Builds are cached under `.quest-cache/lambda/` by a hash of the inputs (spec + project sources;
  the spec carries the pins and constraints, so editing a version rebuilds).

Run `python -m infra_pulumi.package --help`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from flows.core.errors import QuestError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".quest-cache" / "lambda"

# Bump when the build procedure changes in a way that changes the output for the same inputs.
BUILDER_VERSION = "3"  # 2: the dev kit (flows/devkit) is left out; 3: pyproject ranges as constraints

# Lambda's limits: 250 MB unzipped (code + layers); 50 MB for a zip uploaded directly with the API.
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
DIRECT_UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024

LAMBDA_PYTHON_VERSION = "3.12"
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34). manylinux2014 alone is not enough:
# pandas 3 publishes only manylinux_2_28 wheels for x86_64, which that glibc also runs.
LAMBDA_PLATFORMS: tuple[str, ...] = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")

# Distributions the zip pins in place of a declared one (same version numbers): the pin must satisfy
# that one's range in [project].dependencies. Full prefect + pandas is over Lambda's 250 MB.
STANDS_IN_FOR: dict[str, str] = {"prefect-client": "prefect"}
# The project's own packages copied into the zip root.
PROJECT_PACKAGES: tuple[str, ...] = ("flows",)

# Directories that are never imported at runtime; files that only record the install.
STRIP_DIRS = frozenset({"__pycache__", "tests"})
STRIP_TOP_LEVEL = frozenset({"bin"})  # console scripts pip writes with this machine's interpreter path
# Project folders that never ship: the development kit (loopback upstream, samples, emulator, demo).
DEV_ONLY_PACKAGES = frozenset({("flows", "devkit")})
STRIP_DIST_INFO_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"})
STRIP_SUFFIXES = (".pyc", ".pyo")

# Cached zips kept (the newest ones); older builds are deleted.
CACHE_KEEP = 3

# 1980-01-01 is the earliest time a zip entry can carry.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class PackageError(QuestError):
    """The package could not be built or breaks a Lambda limit; nothing was cached."""


class SpecOverrides(TypedDict, total=False):
    """`PackageSpec` fields besides `python_version` (`for_running_interpreter` sets that one)."""

    platforms: tuple[str, ...]
    requirements: tuple[str, ...] | None
    no_deps_requirements: tuple[str, ...] | None
    constraints: tuple[str, ...] | None
    project_packages: tuple[str, ...]
    max_unzipped_bytes: int
    source_root: Path


@dataclass(frozen=True)
class PackageSpec:
    """Everything the zip is a function of (besides the project sources and the index).

    Requirements left as None are read from `source_root`'s pyproject.toml, so the pins packaged are
    the ones beside the sources packaged (and `PackageSpec()` needs no copy of them here).
    """

    python_version: str = LAMBDA_PYTHON_VERSION
    platforms: tuple[str, ...] = LAMBDA_PLATFORMS
    requirements: tuple[str, ...] | None = None
    no_deps_requirements: tuple[str, ...] | None = None
    constraints: tuple[str, ...] | None = None
    project_packages: tuple[str, ...] = PROJECT_PACKAGES
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES
    source_root: Path = field(default=PROJECT_ROOT, compare=False)

    def __post_init__(self) -> None:
        if self.requirements is None or self.no_deps_requirements is None:
            requirements, no_deps = lambda_pins(self.source_root)
            if self.requirements is None:
                object.__setattr__(self, "requirements", requirements)
            if self.no_deps_requirements is None:
                object.__setattr__(self, "no_deps_requirements", no_deps)
        if self.constraints is None:
            object.__setattr__(self, "constraints", project_ranges(self.source_root))

    @classmethod
    def for_running_interpreter(cls, **overrides: Unpack[SpecOverrides]) -> PackageSpec:
        """A spec whose zip the running interpreter can import (tests; this machine is 3.11)."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return cls(python_version=version, **overrides)


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    input_hash: str
    cached: bool = False

    @property
    def source_code_hash(self) -> str:
        """The base64 sha256 Lambda reports as CodeSha256 (what `source_code_hash` compares)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def needs_s3_upload(self) -> bool:
        return self.zipped_bytes > DIRECT_UPLOAD_LIMIT_BYTES

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["source_code_hash"] = self.source_code_hash
        data["zipped_mb"] = round(self.zipped_bytes / 1e6, 1)
        data["unzipped_mb"] = round(self.unzipped_bytes / 1e6, 1)
        return data


# --------------------------------------------------------------------------- pure parts


def lambda_pins(root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(requirements, no-deps) from pyproject's `[tool.quest.lambda]`: the one place a zip version is set."""
    table = _pyproject(root).get("tool", {}).get("quest", {}).get("lambda", {})
    if "requirements" not in table:
        raise PackageError(f"{root / 'pyproject.toml'} has no [tool.quest.lambda] requirements")
    return tuple(table["requirements"]), tuple(table.get("no-deps", ()))


def project_ranges(root: Path) -> tuple[str, ...]:
    """`[project].dependencies`: the bounds a development install obeys, also the zip's constraints."""
    return tuple(_pyproject(root).get("project", {}).get("dependencies", ()))


def _pyproject(root: Path) -> dict[str, Any]:
    return tomllib.loads((root / "pyproject.toml").read_text())


def project_files(root: Path, packages: Sequence[str]) -> list[tuple[str, Path]]:
    """(archive name, path) for every source file of the project packages, sorted."""
    found: list[tuple[str, Path]] = []
    for package in packages:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise PackageError(f"{base} is not a Python package")
        for path in base.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and not _stripped(rel.parts) and tuple(rel.parts[:2]) not in DEV_ONLY_PACKAGES:
                found.append((rel.as_posix(), path))
    return sorted(found)


def _stripped(parts: Sequence[str]) -> bool:
    """True for paths the zip leaves out (bytecode, tests, scripts, install records)."""
    if any(part in STRIP_DIRS for part in parts[:-1]) or parts[0] in STRIP_TOP_LEVEL:
        return True
    name = parts[-1]
    if name.endswith(STRIP_SUFFIXES):
        return True
    return len(parts) >= 2 and parts[-2].endswith(".dist-info") and name in STRIP_DIST_INFO_FILES


def input_hash(spec: PackageSpec) -> str:
    """Hash of everything that determines the zip: the spec, the builder, the project sources."""
    digest = hashlib.sha256()
    described = {k: v for k, v in asdict(spec).items() if k != "source_root"}
    described["builder"] = BUILDER_VERSION
    described["project"] = _project_metadata(spec.source_root)
    digest.update(json.dumps(described, sort_keys=True, default=list).encode())
    for name, path in project_files(spec.source_root, spec.project_packages):
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class _ProjectMetadata(TypedDict):
    name: str
    version: str
    entry_points: dict[str, dict[str, str]]  # group -> {name: "module:attr"}


def _project_metadata(root: Path) -> _ProjectMetadata:
    """Name, version and entry points from pyproject.toml (the zip's own dist-info is made from it)."""
    project = _pyproject(root)["project"]
    return {
        "name": project["name"],
        "version": project["version"],
        "entry_points": project.get("entry-points", {}),
    }


def dist_info_files(root: Path) -> dict[str, bytes]:
    """A minimal dist-info for the project, so `prefect.collections` finds the Lambda worker type."""
    meta = _project_metadata(root)
    dist = f"{str(meta['name']).replace('-', '_')}-{meta['version']}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    lines: list[str] = []
    for group, entries in sorted(meta["entry_points"].items()):
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in sorted(entries.items()))
        lines.append("")
    return {
        f"{dist}/METADATA": metadata.encode(),
        f"{dist}/entry_points.txt": "\n".join(lines).encode(),
    }


def pip_commands(
    spec: PackageSpec, target: Path, python: str = sys.executable, constraints_file: Path | None = None
) -> list[list[str]]:
    """The pip invocations that fill `target` for the spec's platform (binary wheels only).

    `constraints_file` holds `spec.constraints` (pip takes constraints only from a file).
    """
    common = [python, "-m", "pip", "install", "--target", str(target), "--only-binary=:all:"]
    common += ["--python-version", spec.python_version, "--implementation", "cp"]
    for platform in spec.platforms:
        common += ["--platform", platform]
    common += ["--no-compile", "--disable-pip-version-check", "--no-warn-script-location", "--quiet"]
    if constraints_file is not None:
        common += ["--constraint", str(constraints_file)]
    commands = [[*common, *spec.requirements]] if spec.requirements else []
    if spec.no_deps_requirements:
        commands.append([*common, "--no-deps", *spec.no_deps_requirements])
    return commands


def constraints_text(spec: PackageSpec) -> str:
    """The constraints file's content: the project's ranges, one a line."""
    return "".join(f"{line}\n" for line in spec.constraints or ())


def write_zip(entries: Sequence[tuple[str, Path | bytes]], out: Path) -> None:
    """Deterministic zip: sorted names, fixed timestamps, modes 0644/0755, fixed compression."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, source in sorted(entries, key=lambda item: item[0]):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = isinstance(source, Path) and os.access(source, os.X_OK)
            info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            info.create_system = 3  # unix, so the modes above are honoured
            data = source.read_bytes() if isinstance(source, Path) else source
            zf.writestr(info, data, compresslevel=9)


# --------------------------------------------------------------------------- the build


def build(
    spec: PackageSpec | None = None,
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    use_cache: bool = True,
    python: str = sys.executable,
) -> BuiltPackage:
    """The zip for `spec`, from the cache when its inputs are unchanged."""
    spec = spec or PackageSpec()
    key = input_hash(spec)
    final = cache_dir / f"runner-{key[:16]}.zip"
    if use_cache and final.is_file():
        cached = _read_manifest(final)
        if cached is not None and cached.sha256 == _sha256_file(final):
            return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quest-lambda-", dir=cache_dir) as tmp:
        target = Path(tmp, "site")
        target.mkdir()
        constraints = Path(tmp, "constraints.txt")
        constraints.write_text(constraints_text(spec))
        for command in pip_commands(spec, target, python, constraints):
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
                raise PackageError("pip failed for the Lambda package:\n" + "\n".join(tail))
        entries = _entries(spec, target)
        unzipped = sum(len(s) if isinstance(s, bytes) else s.stat().st_size for _, s in entries)
        if unzipped > spec.max_unzipped_bytes:
            raise PackageError(
                f"the Lambda package would be {unzipped / 1e6:.1f} MB unzipped, over the "
                f"{spec.max_unzipped_bytes / 1e6:.1f} MB limit; nothing was written"
            )
        staging = Path(tmp, "runner.zip")
        write_zip(entries, staging)
        built = BuiltPackage(
            path=final,
            sha256=_sha256_file(staging),
            zipped_bytes=staging.stat().st_size,
            unzipped_bytes=unzipped,
            files=len(entries),
            input_hash=key,
        )
        os.replace(staging, final)
        _write_manifest(built)
    _prune(cache_dir, keep=CACHE_KEEP, current=final)
    return built


def _prune(cache_dir: Path, keep: int, current: Path) -> None:
    """Drop all but the newest `keep` cached zips (each is ~50 MB)."""
    zips = sorted(cache_dir.glob("runner-*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [z for z in zips if z != current][max(keep - 1, 0) :]:
        for path in (old, _manifest_path(old)):
            path.unlink(missing_ok=True)


def _entries(spec: PackageSpec, target: Path) -> list[tuple[str, Path | bytes]]:
    entries: dict[str, Path | bytes] = {}
    for path in _walk_files(target):
        rel = path.relative_to(target)
        if not _stripped(rel.parts):
            entries[rel.as_posix()] = path
    for package in spec.project_packages:
        if any(name.startswith(f"{package}/") for name in entries):
            raise PackageError(f"a dependency also installs a top-level {package!r}; refusing to mix them")
    for name, path in project_files(spec.source_root, spec.project_packages):
        entries[name] = path
    entries.update(dist_info_files(spec.source_root))
    return list(entries.items())


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == root
        dirnames[:] = [d for d in dirnames if d not in STRIP_DIRS and not (top and d in STRIP_TOP_LEVEL)]
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_path(zip_path: Path) -> Path:
    return zip_path.with_suffix(".json")


def _write_manifest(built: BuiltPackage) -> None:
    data = {k: v for k, v in built.summary().items() if k in BuiltPackage.__dataclass_fields__}
    data.pop("cached", None)
    tmp = _manifest_path(built.path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, _manifest_path(built.path))


def _read_manifest(zip_path: Path) -> BuiltPackage | None:
    try:
        data = json.loads(_manifest_path(zip_path).read_text())
        data["path"] = Path(data["path"])
        return BuiltPackage(**data, cached=True)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


def describe_zip(path: Path) -> BuiltPackage:
    """Figures for a prebuilt zip (the `lambdaPackagePath` config), checked against the limits."""
    if not path.is_file():
        raise PackageError(f"no Lambda package at {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise PackageError(f"{path} is not a zip file") from exc
    unzipped = sum(info.file_size for info in infos)
    if unzipped > MAX_UNZIPPED_BYTES:
        raise PackageError(f"{path} is {unzipped / 1e6:.1f} MB unzipped, over Lambda's 250 MB limit")
    return BuiltPackage(
        path=path,
        sha256=_sha256_file(path),
        zipped_bytes=path.stat().st_size,
        unzipped_bytes=unzipped,
        files=len(infos),
        input_hash="",
        cached=True,
    )


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra_pulumi.package", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--python-version", default=LAMBDA_PYTHON_VERSION, help="target Python (X.Y)")
    parser.add_argument("--platform", action="append", dest="platforms", help="wheel platform (repeatable)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--no-cache", action="store_true", help="rebuild even when a cached zip matches")
    parser.add_argument("--out", type=Path, help="also copy the zip here")
    args = parser.parse_args(argv)
    spec = PackageSpec(
        python_version=args.python_version, platforms=tuple(args.platforms or LAMBDA_PLATFORMS)
    )
    try:
        built = build(spec, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    except QuestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        shutil.copyfile(built.path, args.out)
    print(json.dumps(built.summary(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
