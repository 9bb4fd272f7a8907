"""scripts/mutation's own parts: the AST supplement's mutants and the staged rewrite."""

from __future__ import annotations

import ast

from devkit.ast_mutants import mutants
from devkit.mutation import Config, _documented, undecorated

SOURCE = '''
LIMIT = 20


def next_cursor(previous, candidate, items):
    """Docstring: never deleted."""
    if previous is None:
        return candidate
    items.append(candidate)  # pragma: no mutate
    previous = max(previous, candidate)
    return previous
'''


def test_the_supplement_makes_the_four_kinds_mutmut_does_not() -> None:
    made = {(m.kind, m.function, m.before, m.after) for m in mutants(SOURCE)}
    assert made == {
        ("constant", "", "20", "21"),
        ("negate", "next_cursor", "previous is None", "not previous is None"),
        ("delete", "next_cursor", "return candidate", "pass"),
        ("min/max", "next_cursor", "max(previous, candidate)", "previous"),
        ("min/max", "next_cursor", "max(previous, candidate)", "candidate"),
        ("delete", "next_cursor", "previous = max(previous, candidate)", "pass"),
    }


def test_each_mutant_is_the_module_changed_once() -> None:
    for mutant in mutants(SOURCE):
        changed = ast.unparse(mutant.tree)
        assert changed != ast.unparse(ast.parse(SOURCE))
        compile(mutant.tree, "<mutant>", "exec")


def test_skipped_functions_make_no_mutant() -> None:
    assert {m.function for m in mutants(SOURCE, frozenset({"next_cursor"}))} == {""}


def test_decorators_are_written_as_calls_after_the_definition() -> None:
    source = (
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\n"
        "class Point:\n"
        "    x: int\n"
        "    @property\n"
        "    def double(self) -> int:\n"
        "        return 2 * self.x\n"
    )
    rewritten = undecorated(source)
    assert "@" not in rewritten
    namespace: dict[str, object] = {}
    exec(compile(rewritten, "<staged>", "exec"), namespace)  # noqa: S102 - our own source
    point = namespace["Point"](3)  # type: ignore[operator]
    assert (point.double, hash(point) == hash(namespace["Point"](3))) == (6, True)  # type: ignore[operator]


def test_every_listed_equivalent_mutant_is_read() -> None:
    """A line the script cannot read would silently stop matching its survivor."""
    listed = Config.load().equivalents.read_text().splitlines()
    bullets = [line for line in listed if line.startswith("- ")]
    assert len(_documented(Config.load().equivalents)) == len(bullets) > 0
