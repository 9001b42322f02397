"""The layout keeps its arrows (docs/architecture.md): billing depends on nothing above it but the Stripe
gateway, the integrations never reach into the portal, production code never imports the demo tools, and an
import inside a function says why on the line above it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("billing", "portal", "integrations")


def _modules(room: str) -> list[Path]:
    return [p for p in (ROOT / room).rglob("*.py") if "migrations" not in p.parts]


def _imports(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(module, node, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, ast.AST, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def test_billing_imports_nothing_above_it_but_the_stripe_gateway() -> None:
    wrong = [f"{path.relative_to(ROOT)}: {module}" for path in _modules("billing")
             for module, _, _ in _imports(path)
             if module.split(".")[0] in ("portal", "devtools")
             or (module.startswith("integrations") and module != "integrations.stripe.gateway")]
    assert wrong == []


def test_the_integrations_never_import_the_portal_or_the_demo() -> None:
    wrong = [f"{path.relative_to(ROOT)}: {module}" for path in _modules("integrations")
             for module, _, _ in _imports(path) if module.split(".")[0] in ("portal", "devtools")]
    assert wrong == []


def test_production_code_never_imports_the_demo_tools() -> None:
    wrong = [f"{path.relative_to(ROOT)}: {module}" for room in ROOMS for path in _modules(room)
             for module, _, _ in _imports(path) if module.split(".")[0] == "devtools"]
    assert wrong == []


def test_an_import_inside_a_function_says_why() -> None:
    unexplained = []
    for room in ROOMS:
        for path in _modules(room):
            lines = path.read_text().splitlines()
            for _, node, in_function in _imports(path):
                line = node.lineno  # type: ignore[attr-defined]
                above = line - 2  # the line above, past the other imports of the same block
                while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                    above -= 1
                before = lines[above].strip() if above >= 0 else ""
                if in_function and "#" not in lines[line - 1] and not before.startswith("#"):
                    unexplained.append(f"{path.relative_to(ROOT)}:{line}")
    assert unexplained == []
