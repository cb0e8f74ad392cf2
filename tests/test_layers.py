"""The layer rule of ARCHITECTURE.md: imports go one way only, asyncio only in the server shell."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"bindings", "queues", "exchanges", "amqp_wire", "leveret"}
MAY_IMPORT = {
    "bindings": set(),
    "queues": set(),
    "exchanges": {"bindings", "queues"},
    "amqp_wire": {"bindings", "queues", "exchanges"},
    "leveret": {"bindings", "queues", "exchanges", "amqp_wire"},
}
ASYNCIO_ALLOWED = {"amqp_wire/server.py"}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_go_one_way(package: str) -> None:
    violations = []
    for path in modules(package):
        for name in imported_top_levels(path) & PROJECT - {package}:
            if name not in MAY_IMPORT[package]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_leaves_use_only_stdlib_and_pamqp() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"pamqp", "__future__"}
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("bindings", "queues")
        for path in modules(package)
        for name in imported_top_levels(path) - allowed - {package}
    ]
    assert violations == []


def test_asyncio_lives_in_the_server_shell_only() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("bindings", "queues", "exchanges", "amqp_wire")
        for path in modules(package)
        if "asyncio" in imported_top_levels(path)
        and str(path.relative_to(ROOT)) not in ASYNCIO_ALLOWED
    ]
    assert offenders == []


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from exchanges.vhost import VirtualHost\nimport amqp_wire.channel\n")
    assert imported_top_levels(bad) == {"exchanges", "amqp_wire"}
