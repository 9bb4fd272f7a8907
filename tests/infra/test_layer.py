"""The layer is pinned and reproducible: layers/common/requirements.txt (the lock, written by
`scripts/lock`) agrees with pyproject.toml, the tests run its versions, and `sam build`
ships exactly it, without boto3/botocore (the Lambda runtime's own pair serves the code
and the X-Ray SDK alike), compiled for the runtime's Python (no cold start compiles it)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devkit.template import REPO_ROOT
from esl_sync import hashed_roots

pytestmark = pytest.mark.infra

LOCK = REPO_ROOT / "layers" / "common" / "requirements.txt"
# What the Lambda Python runtime provides, so the layer must not ship (scripts/lock leaves
# them out): boto3 and botocore, and what only they need.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "urllib3", "python-dateutil", "six"}
# Lambda's python3.13 on arm64, for evaluating the dependencies' markers.
LAMBDA = {
    **default_environment(),
    "python_version": "3.13",
    "python_full_version": "3.13.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
}


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def requirements_of(name: str, extras: set[str]) -> list[Requirement]:
    """The installed distribution's requirements that apply on Lambda with ``extras``."""
    found = []
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({**LAMBDA, "extra": e}) for e in extras | {""}):
            found.append(requirement)
    return found


def test_the_lock_pins_what_pyproject_asks_and_only_that() -> None:
    pins = locked()
    assert pins, f"{LOCK} pins nothing"
    assert not set(pins) & RUNTIME_PROVIDED, "the layer must not ship the runtime's boto3"
    needed: dict[str, set[str]] = {}
    todo = [r for r in runtime_requirements() if canonicalize_name(r.name) not in RUNTIME_PROVIDED]
    assert {canonicalize_name(r.name) for r in runtime_requirements()} >= {"boto3"}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in RUNTIME_PROVIDED:
            continue
        assert name in pins, f"{requirement} is needed but not in the lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, which {requirement} refuses: run scripts/lock"
        )
        extras = set(requirement.extras)
        if name in needed and extras <= needed[name]:
            continue
        needed[name] = needed.get(name, set()) | extras
        todo.extend(requirements_of(name, needed[name]))
    assert set(pins) == set(needed), f"locked but never needed: {sorted(set(pins) - set(needed))}"


def test_the_runtime_provided_packages_come_only_through_boto3() -> None:
    pins = locked()
    for name in pins:
        for requirement in requirements_of(name, {""}):
            dependency = canonicalize_name(requirement.name)
            assert dependency not in RUNTIME_PROVIDED - {"botocore"}, (name, dependency)


def test_the_tests_run_the_locked_versions() -> None:
    wrong = {
        name: (version, metadata.version(name))
        for name, version in locked().items()
        if metadata.version(name) != version
    }
    assert wrong == {}, f"installed versions differ from the lock (run scripts/setup): {wrong}"


def test_the_built_layer_is_exactly_the_lock(sam_build_dir: Path) -> None:
    layer = sam_build_dir / "CommonLayer" / "python"
    shipped = {}
    for info in layer.glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        shipped[canonicalize_name(name)] = version
    assert shipped == locked()
    for package in ("boto3", "botocore", "s3transfer", "urllib3", "dateutil"):
        assert not (layer / package).exists(), f"the layer ships {package}"
    # Bytecode of the runtime's Python only (3.13), for every module, used unchecked.
    sources = [f for f in layer.rglob("*.py") if "__pycache__" not in f.parts]
    compiled = list(layer.rglob("*.pyc"))
    assert compiled, "the layer ships no bytecode: every cold start would compile it"
    assert {f.name.rsplit(".", 2)[-2] for f in compiled} == {"cpython-313"}
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        assert pyc.is_file(), f"{source.relative_to(layer)} has no bytecode"
    flags = {int.from_bytes(f.read_bytes()[4:8], "little") for f in compiled[:50]}
    assert flags == {0b01}, "bytecode checked against the sources' times (PEP 552: 1 = hash)"
    assert (layer / "esl_sync" / "store" / "migrations" / "0001_initial.sql").is_file()
    # certifi's roots as a hashed directory, written from the very bundle the layer ships.
    roots = layer / "esl_sync" / "_hashed_roots"
    assert hashed_roots.folder_for(str(layer / "certifi" / "cacert.pem"), roots) == str(roots)
    bundle = (layer / "certifi" / "cacert.pem").read_text(encoding="ascii")
    assert len(list(roots.glob("*.[0-9]"))) == bundle.count("-----BEGIN CERTIFICATE-----")
    size = sum(f.stat().st_size for f in layer.rglob("*") if f.is_file())
    assert size < 50 * 2**20, f"the layer grew to {size / 2**20:.1f} MiB (README says ~40)"
