#!/usr/bin/env python3
"""Functions longer than the limit (ruff has no line-count rule; C901 covers complexity).

Usage: ``python scripts/check_function_length.py [--max-lines N] PATH...`` (files or
directories of ``.py`` files). A function counts from its ``def`` line to its last line,
decorators and docstring included. A longer function passes only with a comment saying
why on its ``def`` line: ``# long: <reason>``. Prints one ``file:line: name is N lines``
per offender and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINES = 80
MARKER = "# long:"


def long_functions(source: str, *, max_lines: int = MAX_LINES) -> Iterator[tuple[int, str, int]]:
    """(line, qualified name, length) of each function over ``max_lines`` lines whose
    ``def`` line has no ``# long: <reason>`` comment."""
    lines = source.splitlines()

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[int, str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                length = child.end_lineno - child.lineno + 1
                reason = lines[child.lineno - 1].partition(MARKER)[2].strip()
                if length > max_lines and not reason:
                    yield child.lineno, name, length
                yield from visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, prefix + child.name + ".")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(source), "")


def python_files(paths: list[str]) -> Iterator[Path]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)
        else:
            yield path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    args = parser.parse_args(argv)
    found = 0
    for path in python_files(args.paths):
        for line, name, length in long_functions(path.read_text(), max_lines=args.max_lines):
            print(f"{path}:{line}: {name} is {length} lines (limit {args.max_lines}; "
                  f"split it, or say why on its def line: {MARKER} <reason>)")
            found += 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
