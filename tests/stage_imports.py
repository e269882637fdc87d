"""The shared modules each stage script imports, followed through the package (with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "transfer_pipeline"


def _package_of(path: Path, root: Path) -> str:
    """The dotted package a file's relative imports start from (its folder)."""
    return ".".join(path.parent.relative_to(root).parts)


def _imported_modules(path: Path, root: Path) -> set[str]:
    """Names in the package that a file imports anywhere (also inside functions): modules,
    subpackages, and ``package.name`` for each name taken from one (a module or not)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package, up level - 1 folders
                parts = _package_of(path, root).split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] == PACKAGE}
    return found


def _files_of(module: str, root: Path) -> list[Path]:
    """What importing ``module`` runs: each enclosing package's __init__.py, then the module
    (``a/b.py``, or ``a/b/__init__.py`` for a subpackage). Empty when it names no file (an
    attribute such as a class or function, taken with ``from a.b import name``)."""
    parts = module.split(".")
    own = root.joinpath(*parts)
    if own.with_suffix(".py").is_file():
        target = own.with_suffix(".py")
    elif (own / "__init__.py").is_file():
        target = own / "__init__.py"
    else:
        return []
    parents = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    return [*parents, target]


def code_dependencies(script: Path, root: Path) -> set[str]:
    """The script, its package __init__ files and every package module it reaches."""
    seen, todo = set(), [script]
    files = {script.relative_to(root).as_posix(), "stages/__init__.py", f"{PACKAGE}/__init__.py"}
    while todo:
        for module in _imported_modules(todo.pop(), root):
            for path in _files_of(module, root):
                name = path.relative_to(root).as_posix()
                if name not in seen:
                    seen.add(name)
                    files.add(name)
                    todo.append(path)
    return files
