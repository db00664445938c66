"""Dependencies run one way (ARCHITECTURE.md): read from the source, so a new module is covered
without editing this test.

FD-REST's vocabulary (edge/fdrest.py) is the contract between simulator/, convert/ and edge/ and
imports nothing; the rooms under edge/ never reach up into the HTTP layer; edge/ never imports the
build step or the simulator (the CLI dispatcher names them as strings and imports them lazily).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOMS_BELOW_HTTP = ("store", "stream", "alarms", "scoring", "ingest", "plant")
ABOVE_THE_ROOMS = ("edge.http", "edge.appliance", "edge.serve", "edge.demo", "edge.cli")


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in `path` names, at any depth (function bodies too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def named(path: Path) -> str:
    return str(path.relative_to(REPO))


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_vocabulary_imports_only_the_standard_library():
    for line, name in imports(REPO / "edge" / "fdrest.py"):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top == "__future__", f"edge/fdrest.py:{line} imports {name}"


def test_the_simulator_takes_only_the_vocabulary_from_edge():
    bad = [f"{named(p)}:{line} {name}" for p in modules("simulator") for line, name in imports(p)
           if (under(name, "edge") and not under(name, "edge.fdrest")) or under(name, "convert", "bench")]
    assert not bad, "simulator/ must import nothing of the runtime or the build step:\n" + "\n".join(bad)


def test_the_build_step_takes_the_vocabulary_and_the_scoring_settings_only():
    allowed = ("edge.fdrest", "edge.scoring.model")
    bad = [f"{named(p)}:{line} {name}" for p in modules("convert") for line, name in imports(p)
           if under(name, "edge") and not under(name, *allowed)]
    assert not bad, "convert/ may use the vocabulary and the runtime's scoring settings only:\n" + "\n".join(bad)


def test_edge_never_imports_the_build_step_the_simulator_or_the_benchmarks():
    bad = [f"{named(p)}:{line} {name}" for p in modules("edge") for line, name in imports(p)
           if under(name, "convert", "simulator", "bench")]
    assert not bad, "edge/ names other parts only as strings in edge/cli.py:\n" + "\n".join(bad)


@pytest.mark.parametrize("room", ROOMS_BELOW_HTTP)
def test_a_room_below_http_never_imports_the_layers_above_it(room):
    bad = [f"{named(p)}:{line} {name}" for p in sorted((REPO / "edge" / room).rglob("*.py"))
           for line, name in imports(p) if under(name, *ABOVE_THE_ROOMS)]
    assert not bad, f"edge/{room}/ is used by the HTTP layer, never the other way round:\n" + "\n".join(bad)


def test_packages_import_nothing_for_a_side_effect():
    inits = [REPO / "convert" / "__init__.py", *sorted((REPO / "edge").rglob("__init__.py"))]
    for path in inits:
        body = ast.parse(path.read_text()).body
        code = [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        assert not code, f"{named(path)} should hold only its docstring, not code run on import"


def test_edge_keeps_few_modules_at_the_top():
    top = sorted(p.name for p in (REPO / "edge").glob("*.py"))
    assert len(top) <= 12, f"edge/ has {len(top)} top-level modules; put new ones in a room: {top}"
