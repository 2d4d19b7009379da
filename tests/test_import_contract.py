"""The product never imports the simulator: a bench installation does not carry it.

Checked on the source (every import statement of every module of the `wipeagent`
package, including imports inside functions), so a lazy import cannot slip through, and on
the package metadata: the `wipeagent` distribution does not ship `wipeagent_sim`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wipeagent

PRODUCT = Path(wipeagent.__file__).parent
FORBIDDEN = "wipeagent_sim"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_the_product_never_imports_the_simulator() -> None:
    modules = sorted(PRODUCT.rglob("*.py"))
    assert len(modules) > 50  # the walk really saw the package
    offenders = [
        f"{path.relative_to(PRODUCT.parent)}:{line}: {name}"
        for path in modules
        for line, name in _imports(path)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]
    assert offenders == []


def test_the_contract_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from wipeagent_sim.android.bench import SimBench\n")
    assert (2, "wipeagent_sim.android.bench") in _imports(bad)


def test_the_simulator_is_not_inside_the_product_package() -> None:
    assert not (PRODUCT / "sim").exists()
    assert not list(PRODUCT.rglob("profiles/*.toml"))
