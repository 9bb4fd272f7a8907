"""``scripts/mutation [MODULE ...]``: the mutation score of the pure modules, per module.

Two sources of mutants, each run against the unit tests (``tests/unit`` without the
repository checks: ``[tool.mutmut] pytest_add_cli_args_test_selection``):

* **mutmut** (``[tool.mutmut]`` in ``pyproject.toml``). mutmut 3 copies the code into
  ``mutants/`` and names each mutant after its file's path, which must then be the
  module's import path: ``esl_sync`` lives in ``layers/common/esl_sync``, so mutmut runs
  in a staging folder, ``.mutation/``, laid out the way it expects (``src/esl_sync``, the
  unit tests with ``tests/fakes.py``, ``tests/strategies.py`` and ``tests/conftest.py``,
  the sample ``events/``, ``pyproject.toml``), rebuilt on every run so no result of older
  tests is reused. mutmut puts ``mutants/src`` first on ``sys.path``, ahead of the
  editable install, so the tests import the mutants. mutmut leaves decorated classes and
  functions alone, so in the staged copy each decorator is written as a call after its
  definition (:func:`undecorated`): the label plan's methods, the properties and the
  pydantic validators are mutated too;
* **the AST supplement** (:mod:`devkit.ast_mutants`: negated conditions, ``min``/``max``
  reduced to one argument, deleted statements, changed constants). One clean run of the
  tests records which test executes which line (``sys.monitoring``); each mutant then runs
  in a forked child, which gives the mutated function's code to every function object of
  it (a constant, or a function whose closure the mutant changes: imports the project
  afresh with the mutated module in place of its file) and runs the tests that execute
  the mutated lines (all the tests that execute the module, for a constant), stopping at
  the first failure.

A mutant is killed when a test fails (or it runs ten times longer than the tests: an
endless loop), survives when they pass, and counts as a survivor too when no test runs it.
The score of a module is killed / all. ``[tool.mutation]`` says which functions are not
counted (the webhook's acting part, which the integration tests cover), the score each
module must reach, and where the equivalent mutants are listed: a survivor listed there
(one line each, with why no test can tell it from the original) is reported as known; any
other survivor is printed in that form, ready to be killed by a test or, when it is
truly equivalent, listed. Exit status 1 when a module is below its score or has a
survivor that is not listed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import importlib.abc
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import types
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devkit.ast_mutants import Mutant, mutants

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "layers" / "common" / "esl_sync"
STAGE = REPO / ".mutation"
_STAGED_SOURCE = "src/esl_sync/"
MODULE_LEVEL = "(module)"  # the function shown for a mutant outside any function
_NOT_PLACED = 99  # a child's exit status: the mutant could not be put in place
_PROJECT_PACKAGES = ("esl_sync", "devkit", "tests", "conftest")
_MUTMUT_DIFFS = """
import json, sys
from mutmut.__main__ import get_diff_for_mutant
from mutmut.configuration import Config
Config.ensure_loaded()
json.dump({name: get_diff_for_mutant(name) for name in json.load(sys.stdin)}, sys.stdout)
"""
_MUTMUT_STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 2: "interrupted"}
"""mutmut's exit codes that are not a kill (see ``mutmut.__main__.status_by_exit_code``):
every other code is a failing test, a timeout or a crash of the mutant."""
_EQUIVALENT = re.compile(
    r"^- `(?P<path>[^`]+)` `(?P<function>[^`]*)`: `(?P<before>.*?)` → `(?P<after>.*?)`: "
)


@dataclass(frozen=True)
class Config:
    modules: list[str]  # paths inside esl_sync: "sync/cursor.py"
    test_selection: list[str]
    skip_functions: dict[str, frozenset[str]]
    thresholds: dict[str, float]
    threshold: float
    equivalents: Path

    @classmethod
    def load(cls) -> Config:
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
        mutmut, own = project["mutmut"], project["mutation"]
        return cls(
            modules=[path.removeprefix(_STAGED_SOURCE) for path in mutmut["only_mutate"]],
            test_selection=mutmut["pytest_add_cli_args_test_selection"],
            skip_functions={k: frozenset(v) for k, v in own["skip_functions"].items()},
            thresholds=own["thresholds"],
            threshold=own["threshold"],
            equivalents=REPO / own["equivalents"],
        )

    def needs(self, path: str) -> float:
        return float(self.thresholds.get(path, self.threshold))


@dataclass(frozen=True)
class Survivor:
    path: str
    function: str
    before: str
    after: str
    where: str  # "mutmut x_next_cursor__mutmut_5" or "ast delete, line 34"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.path, self.function, _plain(self.before), _plain(self.after))

    def line(self) -> str:
        return f"- `{self.path}` `{self.function}`: `{self.before}` → `{self.after}`: "


@dataclass
class Tally:
    mutmut_killed: int = 0
    mutmut_total: int = 0
    ast_killed: int = 0
    ast_total: int = 0
    survivors: list[Survivor] = field(default_factory=list)

    @property
    def score(self) -> float:
        total = self.mutmut_total + self.ast_total
        return 100.0 * (self.mutmut_killed + self.ast_killed) / total if total else 100.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="e.g. sync/cursor.py, cursor (default: all)")
    parser.add_argument("--only", choices=("mutmut", "ast"), help="run one source of mutants")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    config = Config.load()
    try:
        chosen = [_resolve(name, config.modules) for name in args.modules] or config.modules
    except ValueError as error:
        print(f"scripts/mutation: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    tallies = {path: Tally() for path in chosen}
    if args.only != "ast":
        _run_mutmut(chosen, config, tallies, args.jobs)
    if args.only != "mutmut":
        _run_ast(chosen, config, tallies, args.jobs)
    failed = _report(tallies, config, complete=args.only is None)
    print(f"\n{time.monotonic() - started:.0f} s on {args.jobs} processes")
    return 1 if failed else 0


def _resolve(name: str, modules: list[str]) -> str:
    wanted = name.removeprefix("esl_sync.").replace(".", "/").removesuffix("/py")
    wanted = wanted.removeprefix("layers/common/esl_sync/").removesuffix(".py")
    matches = [
        m
        for m in modules
        if m.removesuffix(".py")
        in (wanted, *[f"{p}/{wanted}" for p in ("sync", "clover", "hipoink", "store")])
    ]
    if len(matches) != 1:
        raise ValueError(f"{name!r} is none of the mutated modules ({', '.join(modules)})")
    return matches[0]


def _module_name(path: str) -> str:
    return "esl_sync." + path.removesuffix(".py").replace("/", ".")


def _plain(code: str) -> str:
    return " ".join(code.split())


# -- mutmut ------------------------------------------------------------------------------------


def _stage(modules: list[str]) -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, STAGE / _STAGED_SOURCE, ignore=ignore)
    for path in modules:
        staged = STAGE / _STAGED_SOURCE / path
        staged.write_text(undecorated(staged.read_text()))
    shutil.copytree(REPO / "tests" / "unit", STAGE / "tests" / "unit", ignore=ignore)
    shutil.copytree(REPO / "events", STAGE / "events")  # the sample events the tests read
    for name in ("tests/fakes.py", "tests/strategies.py", "tests/conftest.py", "pyproject.toml"):
        shutil.copy2(REPO / name, STAGE / name)


def undecorated(source: str) -> str:
    """``source`` with each decorator applied after its definition, the same thing written
    the other way (``@dataclass class C: ...`` → ``class C: ...`` then ``C = dataclass(C)``).

    mutmut mutates no decorated class or function (a decorator runs at definition time),
    which would leave out every method of a dataclass (the label plan), every property and
    every pydantic validator; written this way they are plain definitions to mutmut.
    """
    lines = source.splitlines(keepends=True)
    dropped: set[int] = set()
    added: dict[int, list[str]] = defaultdict(list)  # after line → lines

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.ClassDef):
                visit(node.body)
            if not node.decorator_list:
                continue
            dropped.update(range(node.decorator_list[0].lineno, node.lineno))
            text = lines[node.lineno - 1]
            applied = node.name
            for decorator in reversed(node.decorator_list):
                applied = f"{ast.unparse(decorator)}({applied})"
            indent = text[: len(text) - len(text.lstrip())]
            added[node.end_lineno or node.lineno].append(f"{indent}{node.name} = {applied}\n")

    visit(ast.parse(source).body)
    result = []
    for number, line in enumerate(lines, start=1):
        if number not in dropped:
            result.append(line)
        result.extend(added.get(number, []))
    return "".join(result)


def _run_mutmut(chosen: list[str], config: Config, tallies: dict[str, Tally], jobs: int) -> None:
    _stage(config.modules)
    log = STAGE / "mutmut.log"
    print(f"mutmut: {len(chosen)} module(s), log in {log.relative_to(REPO)}", flush=True)
    names = [f"{_module_name(path)}.*" for path in chosen]
    mutmut = Path(sys.executable).with_name("mutmut")
    with log.open("w") as out:
        run = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs), *names],
            cwd=STAGE,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if run.returncode != 0:
        raise SystemExit(f"mutmut failed (exit {run.returncode}); see {log}")
    survived: dict[str, str] = {}
    for path in chosen:
        meta = json.loads((STAGE / "mutants" / f"{_STAGED_SOURCE}{path}.meta").read_text())
        tally = tallies[path]
        for key, code in meta["exit_code_by_key"].items():
            function = _mutmut_function(key)
            if function in config.skip_functions.get(path, ()):
                continue
            status = _MUTMUT_STATUS.get(code, "killed") if code is not None else "not run"
            if status in ("not run", "interrupted"):
                raise SystemExit(f"mutmut did not finish {key} ({status}); see {log}")
            if status == "skipped":  # a `# pragma: no mutate` line
                continue
            tally.mutmut_total += 1
            if status == "killed":
                tally.mutmut_killed += 1
            else:
                survived[key] = path
    diffs = _mutmut_diffs(list(survived))
    for key, path in survived.items():
        before, after = _changed_lines(diffs[key])
        where = f"mutmut {key.rpartition('.')[2]}"
        tallies[path].survivors.append(Survivor(path, _mutmut_function(key), before, after, where))


def _mutmut_function(key: str) -> str:
    """``esl_sync.sync.labels.xǁLabelPlanǁadd__mutmut_3`` → ``LabelPlan.add``."""
    mangled = key.rpartition("__mutmut_")[0].rpartition(".")[2]
    if mangled.startswith("xǁ"):
        return mangled[2:].replace("ǁ", ".")
    return mangled.removeprefix("x_")


def _mutmut_diffs(keys: list[str]) -> dict[str, str]:
    if not keys:
        return {}
    run = subprocess.run(
        [sys.executable, "-c", _MUTMUT_DIFFS],
        cwd=STAGE,
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        check=True,
    )
    diffs: dict[str, str] = json.loads(run.stdout)
    return diffs


def _changed_lines(diff: str) -> tuple[str, str]:
    lines = diff.splitlines()
    before = [
        line[1:].strip() for line in lines if line.startswith("-") and not line.startswith("---")
    ]
    after = [
        line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(before), " / ".join(after)


# -- the AST supplement --------------------------------------------------------------------------


class _Recorder:
    """A pytest plugin: which test executes which line of the mutated files, and how long
    each test takes."""

    def __init__(self, files: set[str]) -> None:
        self.files = files
        self.current: str | None = None
        self.lines: dict[tuple[str, int], set[str]] = defaultdict(set)
        self.seconds: dict[str, float] = defaultdict(float)

    def on_line(self, code: types.CodeType, line: int) -> object:
        if code.co_filename not in self.files:
            return sys.monitoring.DISABLE
        if self.current is not None:
            self.lines[(code.co_filename, line)].add(self.current)
        return None

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = nodeid

    def pytest_runtest_logfinish(self) -> None:
        self.current = None

    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> None:
        self.seconds[item.nodeid] += call.duration


class _Only:
    """A pytest plugin that keeps the chosen tests, in the order given."""

    def __init__(self, nodeids: list[str]) -> None:
        self.order = {nodeid: n for n, nodeid in enumerate(nodeids)}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        items[:] = sorted(
            (i for i in items if i.nodeid in self.order), key=lambda i: self.order[i.nodeid]
        )


class _MutantLoader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports one module from a compiled mutant instead of its file."""

    def __init__(self, name: str, path: Path, code: types.CodeType) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=str(self.path))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__file__ = str(self.path)
        exec(self.code, module.__dict__)  # noqa: S102 - the mutant of our own module


def _run_ast(chosen: list[str], config: Config, tallies: dict[str, Tally], jobs: int) -> None:
    files = {str(PACKAGE / path): path for path in chosen}
    recorder = _Recorder(set(files))
    tool = sys.monitoring.COVERAGE_ID
    sys.monitoring.use_tool_id(tool, "scripts/mutation")
    sys.monitoring.register_callback(tool, sys.monitoring.events.LINE, recorder.on_line)
    sys.monitoring.set_events(tool, sys.monitoring.events.LINE)
    try:
        print("ast: recording which test runs which line", flush=True)
        with _quiet():
            clean = pytest.main(
                [*config.test_selection, "-q", "-p", "no:cacheprovider"], plugins=[recorder]
            )
    finally:
        sys.monitoring.set_events(tool, 0)
        sys.monitoring.free_tool_id(tool)
    if clean != 0:
        raise SystemExit(f"the unit tests fail without a mutant (pytest exit {clean})")
    jobs_to_run: list[tuple[str, Mutant | None, list[str]]] = []
    for path in chosen:
        file = str(PACKAGE / path)
        source = (PACKAGE / path).read_text()
        everyone = sorted(
            {t for (f, _), tests in recorder.lines.items() if f == file for t in tests}
        )
        everyone.sort(key=lambda t: recorder.seconds[t])
        jobs_to_run.append((path, None, everyone))  # the unmutated module must pass
        made: Mutant
        for made in mutants(source, config.skip_functions.get(path, frozenset())):
            if made.function:
                span = _span(made)
                tests = sorted({t for line in span for t in recorder.lines.get((file, line), ())})
                tests.sort(key=lambda t: recorder.seconds[t])
            else:
                tests = everyone
            jobs_to_run.append((path, made, tests))
    print(f"ast: {len(jobs_to_run) - len(chosen)} mutants", flush=True)
    for (path, mutant, _), outcome in zip(
        jobs_to_run, _run_children(jobs_to_run, recorder.seconds, jobs), strict=True
    ):
        tally = tallies[path]
        if mutant is None:
            if outcome not in ("survived", "no tests"):  # no tests: every mutant survives
                raise SystemExit(
                    f"{path}: the tests fail on the unmutated module as loaded here ({outcome})"
                )
            continue
        tally.ast_total += 1
        if outcome in ("killed", "timeout"):
            tally.ast_killed += 1
        else:
            where = f"ast {mutant.kind}, line {mutant.line}" + (
                " (no test runs it)" if outcome == "no tests" else ""
            )
            tally.survivors.append(
                Survivor(path, mutant.function or MODULE_LEVEL, mutant.before, mutant.after, where)
            )


def _span(mutant: Mutant) -> range:
    node = next(n for n in ast.walk(mutant.tree) if getattr(n, "lineno", None) == mutant.line)
    return range(mutant.line, (getattr(node, "end_lineno", None) or mutant.line) + 1)


def _run_children(
    jobs: list[tuple[str, Mutant | None, list[str]]], seconds: dict[str, float], parallel: int
) -> list[str]:
    outcomes = [""] * len(jobs)
    running: dict[int, tuple[int, float]] = {}  # pid → (job, deadline)
    pending = iter(range(len(jobs)))
    done = 0
    while done < len(jobs):
        while len(running) < parallel:
            index = next(pending, None)
            if index is None:
                break
            path, mutant, tests = jobs[index]
            if not tests:
                outcomes[index] = "no tests"
                done += 1
                continue
            limit = 10 * sum(seconds[t] for t in tests) + 10
            running[_fork(path, mutant, tests)] = (index, time.monotonic() + limit)
        for pid, (index, deadline) in list(running.items()):
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                code = os.waitstatus_to_exitcode(status)
                outcomes[index] = {0: "survived", 5: "no tests"}.get(code, "killed")
                if code == _NOT_PLACED:
                    path, mutant, _ = jobs[index]
                    what = f"{mutant.kind}, line {mutant.line}" if mutant else "unmutated"
                    raise SystemExit(f"{path}: a mutant could not be put in place ({what})")
            elif time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                outcomes[index] = "timeout"
            else:
                continue
            del running[pid]
            done += 1
            if done % 50 == 0:
                print(f"ast: {done}/{len(jobs)}", flush=True)
        time.sleep(0.01)
    return outcomes


def _fork(path: str, mutant: Mutant | None, tests: list[str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = _NOT_PLACED
    try:
        file = PACKAGE / path
        tree = mutant.tree if mutant is not None else ast.parse(file.read_text())
        compiled = compile(tree, str(file), "exec")
        if mutant is None or not mutant.function or not _swap_code(compiled, mutant.function):
            # A declared value may shape others (a class's fields, derived constants), and a
            # function whose code cannot be swapped (its closure changed: a deleted
            # ``super()`` call) is defined anew: import the project afresh, with the mutant
            # in place of the module's file.
            for name in list(sys.modules):
                if name.partition(".")[0] in _PROJECT_PACKAGES or name.startswith("test_"):
                    del sys.modules[name]
            sys.meta_path.insert(0, _MutantLoader(_module_name(path), file, compiled))
        files = sorted({t.partition("::")[0] for t in tests})
        with _quiet():
            code = int(
                pytest.main([*files, "-x", "-q", "-p", "no:cacheprovider"], plugins=[_Only(tests)])
            )
    finally:
        os._exit(code)


def _swap_code(module: types.CodeType, qualname: str) -> bool:
    """Give every function object of ``qualname`` in the mutated file the mutant's code:
    the function itself, as a method, a property or a validator, and every name it was
    imported under. The tests then need no new import (the parent imported everything)."""
    found = [c for c in _code_objects(module) if c.co_qualname == qualname]
    if len(found) != 1:
        return False
    functions = [
        thing
        for thing in gc.get_objects()
        if isinstance(thing, types.FunctionType)
        and thing.__code__.co_filename == module.co_filename
        and thing.__code__.co_qualname == qualname
    ]
    if not functions or any(f.__code__.co_freevars != found[0].co_freevars for f in functions):
        return False  # a function's closure must match its code's free variables
    for function in functions:
        function.__code__ = found[0]
    return True


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield constant
            yield from _code_objects(constant)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Standard output and error to /dev/null (pytest's own and the code's)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


# -- the report ----------------------------------------------------------------------------------


def _documented(path: Path) -> set[tuple[str, str, str, str]]:
    keys = set()
    for line in path.read_text().splitlines():
        if match := _EQUIVALENT.match(line):
            keys.add(
                (match["path"], match["function"], _plain(match["before"]), _plain(match["after"]))
            )
    return keys


def _report(tallies: dict[str, Tally], config: Config, *, complete: bool = True) -> bool:
    """Print the table and the survivors; whether a module fails. ``complete``: both
    sources ran, so a listed equivalent that did not survive is stale."""
    documented = _documented(config.equivalents)
    failed = False
    print(f"\n{'module':<22} {'mutmut':>9} {'ast':>9} {'score':>8} {'needs':>6}")
    for path, tally in tallies.items():
        needs = config.needs(path)
        below = tally.score < needs
        failed |= below
        print(
            f"{path:<22} {tally.mutmut_killed:>4}/{tally.mutmut_total:<4}"
            f" {tally.ast_killed:>4}/{tally.ast_total:<4} {tally.score:>6.1f} % {needs:>4.0f} %"
            + ("  BELOW" if below else "")
        )
    new = [s for t in tallies.values() for s in t.survivors if s.key not in documented]
    known = sum(len(t.survivors) for t in tallies.values()) - len(new)
    print(f"\n{known} survivor(s) listed as equivalent in {config.equivalents.relative_to(REPO)}")
    if new:
        failed = True
        print(
            f"{len(new)} survivor(s) not listed there: kill each with a test, or list it"
            " with why it is equivalent:"
        )
        for survivor in new:
            print(f"  ({survivor.where})\n{survivor.line()}")
    survived = {s.key for t in tallies.values() for s in t.survivors}
    stale = sorted(k for k in documented if k[0] in tallies and k not in survived)
    if complete and stale:
        print(f"{len(stale)} listed equivalent(s) no longer survive (the code changed): remove:")
        for path, function, before, after in stale:
            print(f"- `{path}` `{function}`: `{before}` → `{after}`")
    return failed


if __name__ == "__main__":
    sys.exit(main())
