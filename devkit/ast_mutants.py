"""The mutants mutmut does not make, built with the standard library's ``ast``.

mutmut (``scripts/mutation``) swaps operators, bumps numbers and changes strings inside
functions, and replaces arguments and assigned values by ``None``. Four kinds of fault it
never makes are common in this code base, so this module makes them too:

* **negate**: the condition of an ``if``, ``while``, conditional expression or
  comprehension filter becomes ``not (condition)`` (mutmut only removes a ``not``);
* **min/max**: ``min(a, b, ...)`` or ``max(a, b, ...)`` becomes each argument alone
  (``max(previous, candidate)`` → ``previous``: a cursor that never moves forward);
* **delete**: a statement inside a function becomes ``pass``: a call made for its effect,
  a write to an attribute or an item, a rebinding of a local name, an early ``return``,
  a ``raise``, a ``continue`` or a ``break`` (deleting a first binding only raises
  ``NameError``, which any test notices, so it is not made);
* **constant**: a declared limit or default changes: a number in the value of a
  module-level assignment or in a class-level ``Field(...)`` becomes one more, and a
  string assigned to a module-level name gets an ``X`` (mutmut does not mutate code
  outside functions).

A line that ends in ``# pragma: no mutate`` (mutmut's marker) makes no mutant here either.
Each mutant is the whole module, mutated once, as a tree to compile in place of the
module's source (:mod:`devkit.mutation` runs the tests against it).
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator, Set
from dataclasses import dataclass
from typing import TypeVar

_Node = TypeVar("_Node", bound=ast.AST)
_SHOWN_CHARS = 160


@dataclass(frozen=True)
class Mutant:
    """One mutation of a module: where, what it changed, and the mutated module."""

    kind: str  # negate | min/max | delete | constant
    function: str  # "LabelPlan.add", "next_cursor"; "" at module or class level
    line: int
    before: str  # the code as written (one line, at most _SHOWN_CHARS characters)
    after: str  # the code of the mutant
    tree: ast.Module


def mutants(source: str, skip_functions: Set[str] = frozenset()) -> Iterator[Mutant]:
    """Every mutant of ``source``, in a stable order; none inside ``skip_functions``
    (names as :attr:`Mutant.function` shows them)."""
    tree = ast.parse(source)
    no_mutate = {
        number
        for number, text in enumerate(source.splitlines(), start=1)
        if "# pragma: no mutate" in text
    }
    index = 0
    while True:
        mutator = _Mutator(index, skip_functions, no_mutate)
        mutated = mutator.visit(copy.deepcopy(tree))
        if mutator.found is None:
            return
        kind, function, line, before, after = mutator.found
        assert isinstance(mutated, ast.Module)
        yield Mutant(kind, function, line, before, after, ast.fix_missing_locations(mutated))
        index += 1


def _shown(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


class _Mutator(ast.NodeTransformer):
    """Counts the places a mutant can be made, in visiting order, and makes the
    ``target``-th. Children are visited before their parent, so the count never depends
    on which mutant is made."""

    def __init__(self, target: int, skip_functions: Set[str], no_mutate: Set[int]) -> None:
        self.target = target
        self.skip_functions = skip_functions
        self.no_mutate = no_mutate
        self.count = 0
        self.found: tuple[str, str, int, str, str] | None = None
        self.classes: list[str] = []
        self.function = ""  # the outermost function (or method) being visited
        self.last_statement: ast.stmt | None = None  # its final statement
        self.bound: set[str] = set()  # the names it has bound so far
        self.declared = 0  # > 0: inside a declared value (module constant, Field(...))

    def visit(self, node: ast.AST) -> ast.AST:
        result: ast.AST = super().visit(node)
        if isinstance(node, ast.stmt) and self.function:
            if self._deletable(node):
                result = self._offer(result, "delete", ast.Pass(), before=node)
            self.bound.update(
                n.id
                for n in ast.walk(node)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            )
        return result

    # -- where we are ------------------------------------------------------------------

    def visit_Module(self, node: ast.Module) -> ast.AST:
        for statement in node.body:
            if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
                if isinstance(statement.value, ast.Constant) and isinstance(
                    statement.value.value, str
                ):
                    text = statement.value.value
                    statement.value = self._offer(
                        statement.value, "constant", ast.Constant(text + "X")
                    )
                    continue
                self.declared += 1
                statement.value = self.visit(statement.value)  # type: ignore[assignment]
                self.declared -= 1
            else:
                self.visit(statement)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._function(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        if self.function:  # a nested function belongs to the outer one
            node.body = [self.visit(statement) for statement in node.body]  # type: ignore[misc]
            return node
        name = ".".join([*self.classes, node.name])
        if name in self.skip_functions:
            return node
        arguments = node.args
        every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
        self.function, self.last_statement = name, node.body[-1]
        self.bound = {a.arg for a in every}
        node.body = [self.visit(statement) for statement in node.body]  # type: ignore[misc]
        self.function, self.last_statement, self.bound = "", None, set()
        return node

    # -- negate --------------------------------------------------------------------------

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        node.test = self._negated(node.test)
        return node

    def visit_While(self, node: ast.While) -> ast.AST:
        self.generic_visit(node)
        node.test = self._negated(node.test)
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        node.test = self._negated(node.test)
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        node.ifs = [self._negated(test) for test in node.ifs]
        return node

    def _negated(self, test: ast.expr) -> ast.expr:
        if not self.function or (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)):
            return test  # outside functions nothing runs per call; mutmut removes a `not`
        return self._offer(test, "negate", ast.UnaryOp(ast.Not(), copy.deepcopy(test)))

    # -- min/max, and the calls whose numbers are declared values --------------------------

    def visit_Call(self, node: ast.Call) -> ast.AST:
        field = bool(self.classes) and isinstance(node.func, ast.Name) and node.func.id == "Field"
        self.declared += field
        self.generic_visit(node)
        self.declared -= field
        if (
            self.function
            and isinstance(node.func, ast.Name)
            and node.func.id in ("min", "max")
            and len(node.args) >= 2
            and not node.keywords
            and not any(isinstance(argument, ast.Starred) for argument in node.args)
        ):
            result: ast.expr = node
            for argument in node.args:
                result = self._offer(result, "min/max", copy.deepcopy(argument), before=node)
            return result
        return node

    # -- constant ------------------------------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if self.declared and not self.function and _is_number(node):
            assert isinstance(node.value, int | float)
            return self._offer(node, "constant", ast.Constant(node.value + 1))
        return node

    # -- delete --------------------------------------------------------------------------

    def _deletable(self, statement: ast.stmt) -> bool:
        if isinstance(statement, ast.Expr):
            return not isinstance(statement.value, ast.Constant)  # not a docstring nor `...`
        if isinstance(statement, ast.Raise | ast.Continue | ast.Break | ast.AugAssign):
            return True
        if isinstance(statement, ast.Return):
            return statement is not self.last_statement  # an early return
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            return all(self._rebinds(target) for target in targets)
        return False

    def _rebinds(self, target: ast.expr) -> bool:
        if isinstance(target, ast.Attribute | ast.Subscript):
            return True
        if isinstance(target, ast.Name):
            return target.id in self.bound
        if isinstance(target, ast.Tuple | ast.List):
            return all(self._rebinds(element) for element in target.elts)
        return False

    # -- making the mutant -------------------------------------------------------------------

    def _offer(
        self, node: _Node, kind: str, replacement: ast.AST, *, before: ast.AST | None = None
    ) -> _Node:
        """``node``, or ``replacement`` when this is the mutant to make."""
        first = getattr(node, "lineno", 0)
        last = getattr(node, "end_lineno", first) or first
        if any(line in self.no_mutate for line in range(first, last + 1)):
            return node
        index, self.count = self.count, self.count + 1
        if index != self.target:
            return node
        shown = before if before is not None else node
        after = "pass" if isinstance(replacement, ast.Pass) else _shown(replacement)
        self.found = (kind, self.function, first, _shown(shown), after)
        return ast.copy_location(replacement, node)  # type: ignore[return-value]


def _is_text(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _is_number(node: object) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )
