"""scripts/check_function_length.py: the line-count rule `make lint` adds to ruff's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_function_length.py"
spec = importlib.util.spec_from_file_location("check_function_length", SCRIPT)
checker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checker)


def _function(name: str, lines: int, marker: str = "", indent: str = "") -> str:
    body = "".join(f"{indent}    x = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}():{marker}\n{body}"


def test_long_functions_are_named_with_their_class_and_length():
    source = ("class A:\n" + _function("long", 81, indent="    ") + _function("short", 80,
                                                                            indent="    ")
              + _function("free", 81) + _function("explained", 90, "  # long: a table"))
    free_line = 1 + 81 + 80 + 1  # after the class line and its two methods
    assert list(checker.long_functions(source)) == [(2, "A.long", 81), (free_line, "free", 81)]


def test_a_marker_needs_a_reason_and_nested_functions_count_on_their_own():
    outer = "def outer():\n" + _function("inner", 85, indent="    ") + "    return inner\n"
    found = list(checker.long_functions(outer))
    assert [name for _, name, _ in found] == ["outer", "outer.inner"]
    assert list(checker.long_functions(_function("f", 81, "  # long:"))) == [(1, "f", 81)]


def test_main_prints_one_line_per_offender_and_fails(tmp_path, capsys):
    (tmp_path / "ok.py").write_text(_function("fine", 10))
    (tmp_path / "bad.py").write_text(_function("huge", 100))
    assert checker.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "bad.py:1: huge is 100 lines" in out[0]
    assert checker.main([str(tmp_path / "ok.py")]) == 0
