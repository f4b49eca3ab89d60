"""The layout shows the architecture: no package of sampleopt imports a package that
imports it back (a layer uses only the layers below it), and no source file is longer
than a newcomer can read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import sampleopt

ROOT = Path(sampleopt.__file__).parent
MAX_LINES = 400


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sampleopt" or len(parts) < 2:
        return None
    sub = ROOT / parts[1]
    return parts[1] if sub.is_dir() else None


def package_imports() -> dict[str, set[str]]:
    """package -> the other sampleopt packages its modules import (at any depth)."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        if len(rel) < 2:
            continue  # top-level modules (cli, config, ...) sit above the packages
        pkg = rel[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                other = _package_of(name)
                if other is not None and other != pkg:
                    graph.setdefault(pkg, set()).add(other)
    return graph


def test_no_package_imports_a_package_that_imports_it_back():
    graph = package_imports()
    assert graph, "no imports found: the walk is broken"

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(
            n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ())
        )

    cycles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, f"import cycles between packages: {cycles}"


def test_models_do_not_import_training():
    assert "training" not in package_imports().get("models", set())


def test_no_source_file_is_longer_than_one_sitting():
    long = {
        str(p.relative_to(ROOT)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"
