"""The layers of docs/architecture.md, enforced: every import of every module of mm."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "manymodels"
FOUNDATION = {"errors", "config", "console", "_version"}
LAYERS = ["core", "store", "runner", "steps", "extras"]  # each may import the ones before it
TOP = {"cli", "api", "__init__", "__main__"}  # the interface: anything


def _unit(module: str) -> str:
    """'core', 'store'... for a module in a layer package, else the top-level module's name."""
    return module.split(".")[0]


def _allowed(unit: str) -> set[str]:
    if unit in TOP:
        return {*LAYERS, *FOUNDATION, *TOP}
    if unit == "core":
        return {"core", "errors", "_version"}
    if unit in FOUNDATION:
        return {"errors", "_version"}  # config and console stand on nothing of mm but errors
    return {*LAYERS[: LAYERS.index(unit) + 1], *FOUNDATION}


def _imports(path: Path) -> list[tuple[int, str]]:
    return _imports_of(path.read_text(encoding="utf-8"), list(path.relative_to(PACKAGE).parts[:-1]))


def _imports_of(source: str, package: list[str]) -> list[tuple[int, str]]:
    """(line, imported module relative to manymodels) for every import of mm's own modules
    in ``source``, a module of the package ``package`` (``['core']``; ``[]`` at the top)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                if not node.module:  # from . import x: a module of that package, or a name of its __init__
                    for a in node.names:
                        module = PACKAGE.joinpath(*target, a.name)
                        is_module = module.with_suffix(".py").exists() or module.is_dir()
                        found.append((node.lineno, ".".join([*target, a.name]) if is_module else ".".join(target) or "__init__"))
                    continue
                found.append((node.lineno, ".".join(target)))
            elif node.module and node.module.split(".")[0] == "manymodels":
                found.append((node.lineno, node.module.partition(".")[2] or "__init__"))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "manymodels":
                    found.append((node.lineno, a.name.partition(".")[2] or "__init__"))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_the_tree_has_the_layers():
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").exists(), layer
    loose = {p.stem for p in PACKAGE.glob("*.py")} - FOUNDATION - TOP
    assert not loose, f"modules outside a layer: {sorted(loose)} (see docs/architecture.md)"


def test_every_import_goes_down_the_layers():
    problems = []
    for path in _modules():
        unit = _unit(str(path.relative_to(PACKAGE).with_suffix("")).replace("/", "."))
        for line, target in _imports(path):
            if not target or target == "__init__" and unit in TOP:
                continue
            if _unit(target) not in _allowed(unit):
                problems.append(f"{path.relative_to(REPO)}:{line} ({unit}) imports {target}")
    assert not problems, "imports against docs/architecture.md:\n" + "\n".join(problems)


def test_no_module_imports_another_modules_private_names():
    problems = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("manymodels")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and node.module != "_version":
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {', '.join(private)} from {node.module}")
    assert not problems, "\n".join(problems)


def test_the_checker_reads_every_kind_of_import():
    source = "from ..store import datastore\nfrom . import automl\nfrom ..errors import MMError\nimport manymodels.runner.engine\nfrom manymodels.steps.train import train\n"
    assert [t for _, t in _imports_of(source, ["core"])] == ["store", "core.automl", "errors", "runner.engine", "steps.train"]
    assert "store" not in _allowed("core") and "steps" not in _allowed("runner") and "core" in _allowed("steps")


def test_every_module_is_reachable_by_its_dotted_name():
    """``import manymodels.runner.tasks as tasks`` walks package attributes: a name the
    package exports (the API's ``run``) must never shadow a layer."""
    import functools
    import importlib
    import inspect

    import manymodels

    for path in _modules():
        dotted = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if dotted.endswith("__init__") or dotted == "__main__":
            continue
        module = importlib.import_module(f"manymodels.{dotted}")
        assert functools.reduce(getattr, dotted.split("."), manymodels) is module, dotted
        assert inspect.ismodule(module)
