"""The shape of the product code, checked like a linter: sizes and the direction of imports.

Limits (issue "Shape of the code"): no product module over 400 lines, no function over 60. Layers
(``../shared/DESIGN.md``, "Layers"; the map in ``docs/design-notes.md``): ``raysys`` imports no
``ray``, ``raysys.actors`` or ``raysys.serve`` at module level; inside ``raysys`` a module imports
only groups of a lower rank (or its own group) at module level, so imports point down only.
Imports inside functions and under ``TYPE_CHECKING`` are the composition roots' business and are
not checked here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = {"raysys": "raysys", "actors": "raysys.actors", "serve": "raysys.serve"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Rank of each group of raysys/ (a subpackage, or a top-level module): a module-level import may
# only point at a group of lower rank, or inside its own group.
RANKS: dict[str, int] = {
    "errors": 0,
    "config": 1, "models": 1, "logs": 1, "timespec": 1,
    "signing": 2, "redis_server": 2, "handlers": 2, "timer": 2, "actor_config": 2,
    "store": 3,
    "core": 4, "messaging": 4, "snapshots": 4, "ledger": 4, "registry": 4, "metrics": 4,
    "placement": 4, "schedules": 4,
    "rotation": 5, "execution": 5, "bench": 5, "housekeeping": 5,
    "worker_loop": 6,
    "client": 7,
    "cli": 8, "aio": 8,
}
TOP = "__init__"  # raysys/__init__.py: the public API, may import any group
FORBIDDEN_IN_CORE = ("ray", "raysys.actors", "raysys.serve")


def product_files() -> Iterator[tuple[Path, str]]:
    """(path, dotted module name) of every product module."""
    for folder, package in PRODUCT.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            yield path, name


def module_level_imports(tree: ast.Module) -> Iterator[str]:
    """Modules imported at module level, outside ``if TYPE_CHECKING:`` blocks."""
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def group_of(module: str) -> str | None:
    """The raysys group a ``raysys.*`` module belongs to (None outside raysys's own groups)."""
    parts = module.split(".")
    if parts[0] != "raysys" or len(parts) == 1:
        return TOP if parts == ["raysys"] else None
    return None if parts[1] in ("actors", "serve") else parts[1]


def test_no_product_module_is_over_the_line_limit() -> None:
    long = {str(path.relative_to(ROOT)): n for path, _ in product_files()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"


def test_no_product_function_is_over_the_line_limit() -> None:
    long = []
    for path, _ in product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = (node.end_lineno or node.lineno) - first + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split into steps): {long}"


def test_the_core_imports_no_ray_actors_or_serve_at_module_level() -> None:
    wrong = []
    for path, name in product_files():
        if not name.startswith("raysys.") or name.startswith(("raysys.actors", "raysys.serve")):
            continue
        for imported in module_level_imports(ast.parse(path.read_text())):
            if any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN_IN_CORE):
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, wrong


def test_imports_inside_raysys_point_down_only() -> None:
    wrong = []
    for path, name in product_files():
        own = group_of(name)
        if own is None or own == TOP:
            continue
        assert own in RANKS, (f"{name}: a new group; give it a rank in RANKS and "
                              "docs/design-notes.md")
        for imported in module_level_imports(ast.parse(path.read_text())):
            target = group_of(imported)
            if target is None or target == own:
                continue
            if target == TOP or RANKS.get(target, 99) >= RANKS[own]:
                wrong.append(f"{name} (rank {RANKS[own]}) imports {imported} "
                             f"(rank {RANKS.get(target, '?')})")
    assert not wrong, wrong


def test_actors_never_import_serve() -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {imported}"
             for path, name in product_files() if name.startswith("raysys.actors")
             for imported in module_level_imports(ast.parse(path.read_text()))
             if imported.startswith("raysys.serve")]
    assert not wrong, wrong


def test_the_checks_see_a_violation() -> None:
    # given a module that imports upwards, when it is parsed, then the rule names it
    tree = ast.parse("import ray\nfrom raysys.cli.main import main\n")
    imported = list(module_level_imports(tree))
    assert imported == ["ray", "raysys.cli.main"]
    assert RANKS[group_of("raysys.cli.main") or ""] > RANKS["store"]
