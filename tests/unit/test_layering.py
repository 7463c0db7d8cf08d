"""Dependencies point inward: api -> events -> domain, and the domain imports no infrastructure."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"


def imports_of(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (SERVICE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(path.name, alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add((path.name, node.module))
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("domain", ("flask", "sqlalchemy", "psycopg", "alembic", "structlog", "service.events", "service.api",
                "service.config")),
    ("events", ("flask", "service.api")),
])
def test_a_layer_does_not_import_outer_layers(package, forbidden):
    leaks = {(f, m) for f, m in imports_of(package) if m.split(".")[0] in forbidden or m.startswith(forbidden)}
    assert leaks == set()
