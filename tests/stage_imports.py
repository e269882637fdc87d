"""The shared modules each stage script imports, followed through the package (with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "transfer_pipeline"


def _imported_modules(path: Path) -> set[str]:
    """Modules of the package that a file imports anywhere (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside the package
                base = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] == PACKAGE}
    return found


def code_dependencies(script: Path, root: Path) -> set[str]:
    """The script, its package __init__ files and every package module it reaches."""
    seen, todo = set(), [script]
    files = {script.relative_to(root).as_posix(), "stages/__init__.py", f"{PACKAGE}/__init__.py"}
    while todo:
        for module in _imported_modules(todo.pop()):
            path = root / (module.replace(".", "/") + ".py")
            if path.is_file() and module not in seen:
                seen.add(module)
                files.add(path.relative_to(root).as_posix())
                todo.append(path)
    return files
