"""Only Textual's public API, kept by a test: no module under src/ or tests/ imports
`textual._*`, and no class of ours overrides a private method of a Textual class. A
Textual release may change its private parts at will; an upgrade must not be a rewrite."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import virtwatch.tui

ROOT = Path(__file__).resolve().parents[2]


def private_imports(source: str) -> list[tuple[str, int]]:
    """(module, line) of each import of a private Textual module in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            names = [node.module]
            if node.module == "textual":  # from textual import _segment_tools
                names = [f"textual.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "textual" and any(p.startswith("_") for p in parts[1:]):
                found.append((name, node.lineno))
    return found


def test_the_check_sees_every_way_of_importing_a_private_module() -> None:
    source = (
        "import textual._compositor\n"
        "from textual._segment_tools import line_crop\n"
        "from textual import _animator, events\n"
        "from textual.widgets._data_table import RowKey\n"
        "from textual.widgets import DataTable\n"
        "import textual.strip\n"
        "from ._private import x\n"
    )
    assert private_imports(source) == [
        ("textual._compositor", 1),
        ("textual._segment_tools", 2),
        ("textual._animator", 3),
        ("textual.widgets._data_table", 4),
    ]


def test_no_module_imports_a_private_textual_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for top in ("src", "tests")
        for path in sorted((ROOT / top).rglob("*.py"))
        for name, line in private_imports(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_no_widget_of_ours_overrides_a_private_textual_method() -> None:
    offenders = []
    for info in pkgutil.iter_modules(virtwatch.tui.__path__):
        module = importlib.import_module(f"virtwatch.tui.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for attr, value in vars(cls).items():
                private = attr.startswith("_") and not attr.startswith("__")
                if not (private and inspect.isfunction(value)):
                    continue
                for base in cls.__mro__[1:]:
                    if base.__module__.startswith("textual") and attr in vars(base):
                        offenders.append(f"{module.__name__}.{name}.{attr} ({base.__name__})")
    assert offenders == []
