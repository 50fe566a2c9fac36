"""docs/errors.md cannot drift: every row names tests, and every named test exists in the suite."""

from __future__ import annotations

import ast
import re

from .conftest import REPO
from .test_errors import STOPS

DOC = REPO / "docs" / "errors.md"
TESTS = REPO / "tests"
REFERENCE = re.compile(r"^(?:(?P<file>test_\w+\.py)::(?P<function>test_\w+)(?:\[(?P<case>[\w-]+)\])?|STOPS\[(?P<stop>\w+)\])$")


def _rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Situation":
            continue
        rows.append(cells)
    return rows


def _functions(file: str) -> set[str]:
    tree = ast.parse((TESTS / file).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_row_of_docs_errors_md_names_tests_that_exist():
    rows = _rows()
    assert len(rows) >= 60, len(rows)
    problems = []
    for cells in rows:
        assert len(cells) == 5, cells  # Situation | Exit | What mm does | Kept | Tests
        names = re.findall(r"`([^`]+)`", cells[-1])
        if not names:
            problems.append(f"no test named for: {cells[0]}")
        for name in names:
            match = REFERENCE.match(name)
            if match is None:
                problems.append(f"not a test reference: {name!r} ({cells[0]})")
                continue
            if match["stop"]:
                if match["stop"] not in STOPS:
                    problems.append(f"STOPS has no case {match['stop']!r}")
                continue
            file, function = match["file"], match["function"]
            if not (TESTS / file).exists():
                problems.append(f"no file tests/{file}")
            elif function not in _functions(file):
                problems.append(f"no test {file}::{function}")
            elif match["case"]:
                source = (TESTS / file).read_text(encoding="utf-8")
                for part in match["case"].split("-"):
                    if f'"{part}"' not in source:
                        problems.append(f"{file}::{function} has no case {part!r}")
    assert not problems, "\n".join(problems)


def test_every_stop_case_is_in_docs_errors_md():
    text = DOC.read_text(encoding="utf-8")
    missing = [case for case in STOPS if f"STOPS[{case}]" not in text]
    assert not missing, f"add these cases of test_bad_input_stops_with_exit_1_and_a_clear_message to docs/errors.md: {missing}"
