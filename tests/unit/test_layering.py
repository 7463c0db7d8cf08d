"""Dependencies point one way: api, ui and cli on top; bootstrap wires; the capability packages in the
middle; the event store below them; the domain at the bottom. Every import of every module under
service/ (inside functions too) is held against the table below, so one that points the wrong way
fails here with its file and line."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

LEAVES = {"service.times", "service.cursors", "service.links", "service.logs", "service.telemetry",
          "service.spreadsheets", "service.rounds"}

# What each part of the service may import from the service (besides itself). A part is a package
# or a top-level module; the leaves import nothing of the service.
MAY_IMPORT: dict[str, set[str]] = {
    **{leaf: set() for leaf in LEAVES},
    "service.domain": set(),
    "service.config": {"service.domain"},
    "service.events": {"service.domain", "service.times", "service.telemetry"},
    "service.access": {"service.events", "service.times"},
    "service.audit": {"service.domain", "service.events", "service.times", "service.cursors"},
    "service.intake": {"service.domain", "service.events"},
    "service.projections": {"service.domain", "service.events", "service.times", "service.cursors", "service.rounds"},
    "service.notifications": {"service.domain", "service.events", "service.projections", "service.config",
                              "service.links", "service.times", "service.cursors", "service.rounds"},
    "service.people": {"service.config", "service.domain", "service.events", "service.notifications", "service.projections",
                       "service.times", "service.spreadsheets"},
    "service.reports": {"service.domain", "service.projections", "service.links"},
    "service.supervision": {"service.telemetry", "service.times"},
    "service.migrations": {"service.events", "service.access", "service.notifications", "service.projections",
                           "service.people"},
    "service.bootstrap": {"service.config", "service.events", "service.access", "service.audit",
                          "service.projections", "service.notifications", "service.people", "service.links"},
    "service.api": {"service.bootstrap", "service.config", "service.domain", "service.events", "service.access",
                    "service.audit", "service.intake", "service.projections", "service.notifications",
                    "service.reports", "service.migrations", "service.supervision", "service.people", *LEAVES},
    "service.cli": {"service.bootstrap", "service.config", "service.domain", "service.events", "service.access",
                    "service.audit", "service.intake", "service.projections", "service.notifications",
                    "service.reports", "service.migrations", "service.api", "service.wsgi", "service.logs",
                    "service.times", "service.spreadsheets", "service.supervision", "service.telemetry",
                    "service.people"},
    "service.ui": {"service.api", "service.config", "service.domain", "service.events", "service.access",
                   "service.audit", "service.projections", "service.notifications", "service.reports",
                   "service.people", *LEAVES},
    "service.wsgi": {"service", "service.config", "service.logs", "service.api"},
    "service": {"service.api", "service.ui", "service.bootstrap", "service.config", "service.logs"},  # create_app
}

# Libraries a part may not use at all: the domain is pure, and only the HTTP layer knows Flask.
NEVER: dict[str, tuple[str, ...]] = {
    "service.domain": ("flask", "sqlalchemy", "psycopg", "alembic", "structlog", "werkzeug"),
    **{part: ("flask", "werkzeug") for part in MAY_IMPORT
       if part not in ("service.api", "service.ui", "service.cli", "service", "service.wsgi", "service.domain")},
}


def part_of(module: str) -> str:
    """The part a module belongs to: its package under service/, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def module_name(path: Path) -> str:
    relative = path.relative_to(SERVICE.parent).with_suffix("")
    names = list(relative.parts)
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def imports(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import in a module's source, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "service":
            # "from service import migrations" imports a part; "from service import create_app" the package
            found += [(node.lineno, f"service.{alias.name}" if _is_part(alias.name) else "service")
                      for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _is_part(name: str) -> bool:
    return (SERVICE / name).is_dir() or (SERVICE / f"{name}.py").is_file()


def wrong_way(module: str, source: str) -> list[str]:
    """The imports in ``source`` that the part ``module`` belongs to may not make."""
    here = part_of(module)
    allowed, never = MAY_IMPORT[here], NEVER.get(here, ())
    problems = []
    for line, imported in imports(source):
        if imported == "service" or imported.startswith("service."):
            target = part_of(imported)
            if target != here and target not in allowed:
                problems.append(f"{module}:{line} imports {imported}")
        elif imported.split(".")[0] in never:
            problems.append(f"{module}:{line} uses {imported}")
    return problems


MODULES = {module_name(path): path for path in sorted(SERVICE.rglob("*.py"))}


def test_every_part_of_the_service_is_in_the_table():
    assert {part_of(module) for module in MODULES} == set(MAY_IMPORT)


@pytest.mark.parametrize("module", list(MODULES))
def test_imports_point_down_only(module):
    assert wrong_way(module, MODULES[module].read_text()) == []


@pytest.mark.parametrize(("module", "line", "problem"), [
    ("service.events.store", "from service.notifications import outbox", "imports service.notifications"),
    ("service.domain.machine", "import sqlalchemy", "uses sqlalchemy"),
    ("service.projections.queries", "def f():\n    from service.api import params", "imports service.api"),
    ("service.notifications.outbox", "from flask import request", "uses flask"),
    ("service.reports.weekly", "from service import bootstrap", "imports service.bootstrap"),
])
def test_the_check_catches_an_import_that_points_the_wrong_way(module, line, problem):
    source = MODULES[module].read_text() + "\n" + line + "\n"
    [found] = wrong_way(module, source)
    assert found.startswith(f"{module}:") and found.endswith(problem)


def test_no_two_classes_share_a_name():
    defined: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(module)
    assert {name: modules for name, modules in defined.items() if len(modules) > 1} == {}


@pytest.mark.parametrize("package", sorted(p.name for p in SERVICE.iterdir() if (p / "__init__.py").is_file()))
def test_every_package_says_what_it_owns_and_what_it_may_import(package):
    docstring = ast.get_docstring(ast.parse((SERVICE / package / "__init__.py").read_text())) or ""
    assert len(docstring.split()) >= 12, "say what the package owns"
    assert "may import" in docstring.lower() or "imports nothing" in docstring.lower()
