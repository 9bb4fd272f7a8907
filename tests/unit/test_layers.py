"""The layer order (docs/architecture.md, "Layers") is enforced, and enforceable: every
module is placed in it, a violation fails the lint, and no module of the deployed code grows
past a page a reader can hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "layers" / "common" / "esl_sync"
BIN = Path(sys.executable).parent
MAX_MODULE_LINES = 450


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _layer_modules() -> set[str]:
    [layers] = [c for c in _contracts() if c["type"] == "layers"]
    names = layers["layers"]
    assert isinstance(names, list)
    return {name.strip() for layer in names for name in layer.replace(":", "|").split("|")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_of_the_library_has_a_place_in_the_layers() -> None:
    placed = _layer_modules()
    unplaced = [
        name
        for name in sorted(_module_name(path) for path in LIBRARY.rglob("*.py"))
        if not any(name == p or name.startswith(f"{p}.") for p in placed)
    ]
    packages = {"esl_sync", "esl_sync.clover", "esl_sync.hipoink"}  # their __init__: below
    assert set(unplaced) == packages, "add new modules to [tool.importlinter] (pyproject.toml)"


def test_the_package_inits_import_and_re_export_nothing() -> None:
    """Importing ``esl_sync.clover.errors`` must not load the HTTP client with it."""
    for init in LIBRARY.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), init
        assert len(tree.body) == 1, f"{init}: a docstring only"


def test_no_module_of_the_deployed_code_is_over_450_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for root in ("layers", "functions")
        for path in (REPO / root).rglob("*.py")
    }
    assert len(sizes) > 40  # the walk found the code
    assert {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES} == {}


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three packages and the contracts, copied: a test breaks the copy, not the repo."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(LIBRARY, root / "esl_sync")
    shutil.copytree(REPO / "esl_sync_ops", root / "esl_sync_ops")
    shutil.copytree(REPO / "devkit", root / "devkit")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _run(command: list[str | Path], cwd: Path, **more: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, **more)  # type: ignore[call-overload]


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(root), "PATH": str(BIN)}
    return _run([BIN / "lint-imports", "--no-cache"], root, env=env, timeout=120)


def test_the_copy_keeps_every_contract(clean_copy: Path) -> None:
    result = _lint_imports(clean_copy)
    assert result.returncode == 0, result.stdout
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("esl_sync/sync/dispatch.py", "import httpx", "never load boto3"),
        ("esl_sync/webhooks.py", "from esl_sync.clover import oauth", "never load boto3"),
        ("esl_sync/webhooks.py", "from esl_sync.store import dynamo", "No layer imports a higher"),
        ("esl_sync/records.py", "from esl_sync import ports", "No layer imports a higher"),
        ("esl_sync/clover/walk.py", "from esl_sync.sync import poll", "No layer imports a higher"),
        ("esl_sync/store/dynamo.py", "from esl_sync.sync import poll", "import no logic"),
        (
            "esl_sync/store/dynamo.py",
            "from esl_sync.clover import errors",
            "know nothing of Clover",
        ),
        (
            "esl_sync/store/label_owners.py",
            "from esl_sync.store import postgres",
            "No import cycle",
        ),
        ("esl_sync_ops/commands.py", "import devkit.demo", "never imports the development kit"),
    ],
)
def test_an_import_against_the_layers_fails_the_lint(
    clean_copy: Path, module: str, line: str, broken: str
) -> None:
    path = clean_copy / module
    original = path.read_text()
    path.write_text(f"{original}\n{line}  # noqa: F401\n")
    try:
        result = _lint_imports(clean_copy)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout
    assert "1 broken" in result.stdout or "2 broken" in result.stdout
    assert f"{broken}" in result.stdout.split("Broken contracts")[1]


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("layers/common/esl_sync/sync/poll.py", False),
        ("layers/common/esl_sync/webhooks.py", False),
        ("functions/webhook/app.py", False),
        ("layers/common/esl_sync/clover/client.py", True),
        ("layers/common/esl_sync/store/sqs.py", True),
    ],
)
@pytest.mark.parametrize("library", ["boto3", "botocore.exceptions", "psycopg", "httpx"])
def test_ruff_bans_the_adapter_libraries_outside_the_adapters(
    module: str, allowed: bool, library: str
) -> None:
    source = (REPO / module).read_text() + f"\nimport {library}  # noqa: F401\n"
    command: list[str | Path] = [BIN / "ruff", "check", "--select", "TID251"]
    result = _run([*command, "--stdin-filename", module, "-"], REPO, input=source, timeout=60)
    assert (result.returncode == 0) is allowed, result.stdout
    if not allowed:
        assert "TID251" in result.stdout
