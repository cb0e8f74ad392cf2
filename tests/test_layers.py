"""The layer rule of ARCHITECTURE.md: imports go one way only, asyncio only in the server shell,
and no two files import each other, directly or round a longer loop."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each room of the one import name `leveret`, and the folder that holds it.
ROOMS = {
    "leveret.version": ROOT / "leveret" / "version.py",
    "leveret.clock": ROOT / "leveret" / "clock.py",
    "leveret.amqp_wire": ROOT / "amqp_wire",
    "leveret.bindings": ROOT / "bindings",
    "leveret.queues": ROOT / "queues",
    "leveret.exchanges": ROOT / "exchanges",
    "leveret.store": ROOT / "leveret" / "store",
    "leveret.broker": ROOT / "leveret" / "broker",
    "leveret.server": ROOT / "leveret" / "server",
    "leveret.management": ROOT / "leveret" / "management",
    "leveret.playground": ROOT / "leveret" / "playground",
    "leveret": ROOT / "leveret",  # the face: __init__ (public API), cli, testing
}

# Bottom to top; a room may import the rooms listed for it and nothing above.
_CODEC = {"leveret.version", "leveret.amqp_wire"}
_MODEL = _CODEC | {"leveret.clock", "leveret.bindings", "leveret.queues"}
_ROUTING = _MODEL | {"leveret.exchanges"}
_CORE = _ROUTING | {"leveret.store", "leveret.broker"}
MAY_IMPORT: dict[str, set[str]] = {
    "leveret.version": set(),
    "leveret.clock": set(),
    "leveret.amqp_wire": {"leveret.version"},
    "leveret.bindings": set(),
    "leveret.queues": _CODEC | {"leveret.clock"},
    "leveret.exchanges": _MODEL,
    "leveret.store": _ROUTING,
    "leveret.broker": _ROUTING | {"leveret.store"},
    "leveret.server": _CORE,
    "leveret.management": _CORE | {"leveret.server", "leveret.playground"},
    "leveret.playground": _CORE,
    "leveret": set(ROOMS) - {"leveret"},
}
LEAVES = ("leveret.version", "leveret.clock", "leveret.amqp_wire", "leveret.bindings")
ASYNCIO_FREE = ("leveret.amqp_wire", "leveret.bindings", "leveret.queues", "leveret.exchanges",
                "leveret.store", "leveret.broker", "leveret.server")
ASYNCIO_ALLOWED = {"leveret.server.shell"}


def module_name(path: Path) -> str:
    """The dotted name a file is imported by once installed."""
    for room, folder in ROOMS.items():
        if path == folder or folder in path.parents:
            parts = list(path.relative_to(folder).with_suffix("").parts) if folder.is_dir() else []
            if parts and parts[-1] == "__init__":
                parts.pop()
            return ".".join([room, *parts])
    raise ValueError(f"{path} is in no room")


def room_of(module: str) -> str | None:
    for room in ROOMS:  # most specific first, `leveret` last
        if module == room or module.startswith(room + "."):
            return room
    return None


def all_files() -> list[Path]:
    files = {path for folder in ROOMS.values()
             for path in ([folder] if folder.is_file() else folder.rglob("*.py"))}
    return sorted(files)


def imports(path: Path, known: frozenset[str] = frozenset()) -> set[str]:
    """Every module a file imports, at the top, in a function or for type checking.

    `from leveret.x import y` counts as importing leveret.x.y where that is a
    known module, else leveret.x.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
    return names


def project_imports(path: Path, known: frozenset[str]) -> set[str]:
    return {name for name in imports(path, known) if name in known}


def top_levels(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imports(path)}


KNOWN = frozenset(module_name(path) for path in all_files())


def test_every_file_is_in_a_room() -> None:
    assert {room_of(module_name(path)) for path in all_files()} == set(ROOMS)


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_imports_go_one_way(room: str) -> None:
    violations = []
    for path in all_files():
        if room_of(module_name(path)) != room:
            continue
        for name in project_imports(path, KNOWN):
            target = room_of(name)
            if target not in (room, None) and target not in MAY_IMPORT[room]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_leaves_use_only_stdlib_and_pamqp() -> None:
    allowed = set(sys.stdlib_module_names) | {"pamqp", "__future__"}
    violations = []
    for path in all_files():
        if room_of(module_name(path)) in LEAVES:
            own = {name.split(".")[0] for name in project_imports(path, KNOWN)}
            violations += [f"{path.relative_to(ROOT)} imports {name}"
                           for name in top_levels(path) - allowed - own]
    assert violations == []


def test_asyncio_lives_in_the_server_shell_only() -> None:
    offenders = [
        str(path.relative_to(ROOT)) for path in all_files()
        if room_of(module_name(path)) in ASYNCIO_FREE
        and "asyncio" in top_levels(path)
        and module_name(path) not in ASYNCIO_ALLOWED
    ]
    assert offenders == []


def import_graph() -> dict[str, set[str]]:
    graph = {module_name(path): project_imports(path, KNOWN) for path in all_files()}
    # A package's __init__ is not an edge of its own: importing leveret.x.y runs
    # leveret.x's __init__, but that is not a file importing another file back.
    return {module: {name for name in names if name != module} for module, names in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return visiting[visiting.index(module):] + [module]
        if module in done:
            return None
        visiting.append(module)
        for name in sorted(graph.get(module, ())):
            if (cycle := visit(name)) is not None:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if (cycle := visit(module)) is not None:
            return cycle
    return None


def test_no_file_imports_itself_round_a_loop() -> None:
    assert find_cycle(import_graph()) is None


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from leveret.broker.vhost import VirtualHost\nimport leveret.server.channel\n")
    targets = {room_of(name) for name in project_imports(bad, KNOWN)}
    assert targets == {"leveret.broker", "leveret.server"}
    assert not targets <= MAY_IMPORT["leveret.exchanges"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
