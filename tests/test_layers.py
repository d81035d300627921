"""The floor plan holds: who may import whom, read from the source with ``ast`` (no import runs).

- the ground floor (``hoptrace.pipeline``) imports only itself, and no messaging client library;
- the client-neutral machinery of each side imports the ground floor: ``workers`` (the Kafka poll loop, the stage
  processor) and ``producers`` (the publisher), never each other; the gauges' refresher; the drop-in record path
  (``hoptrace.instrumentation``, which also starts the flight recorder's channel on Redis);
- each messaging client's folder (``hoptrace.clients.<client>``) builds on those and is the only place its library is
  imported; the viewer imports only the ground floor's names module;
- only the command line's modules that read telemetry back (``demo``, ``reading``, ``watch``, and ``monitor``
  through ``critical_times``, which reads finished jobs from Jaeger) import the viewer;
- ``hoptrace --help`` loads no broker client, gRPC, SQLite or SDK.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPOSITORY = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
MAPPED: dict[str, str] = SETUPTOOLS["package-dir"]
"""The folder rule as pyproject.toml writes it, the one place: top-level folder X is hoptrace.X; the rest is under hoptrace/."""


def folder(package: str) -> Path:
    """The folder of PACKAGE (``hoptrace...``) by the folder rule."""
    parts = package.split(".")[1:]
    mapped = f"hoptrace.{parts[0]}" if parts else ""
    if mapped in MAPPED:
        return (REPOSITORY / MAPPED[mapped]).joinpath(*parts[1:])
    return (REPOSITORY / "hoptrace").joinpath(*parts)


def package(path: Path) -> str:
    """The package of the folder PATH (one with an ``__init__.py``) by the folder rule."""
    top, *inner = path.relative_to(REPOSITORY).parts
    return ".".join(("hoptrace", *inner) if top == "hoptrace" else ("hoptrace", top, *inner))


CLIENT_FOLDERS = {
    "hoptrace.clients.kafka_python": ("kafka",),
    "hoptrace.clients.confluent": ("confluent_kafka",),
    "hoptrace.clients.aiokafka": ("aiokafka",),
    "hoptrace.clients.celery": ("celery", "kombu", "redis"),
    "hoptrace.clients.redis": ("redis",),
}
"""Each messaging client's folder and the libraries it imports; nothing else imports them (redis-py: Celery's broker, hoptrace's own state)."""
ENGINES = ("hoptrace.pipeline", "hoptrace.workers", "hoptrace.producers", "hoptrace.gauges", "hoptrace.instrumentation")
"""What a client folder builds on: the ground floor and the client-neutral machinery of every side (worker loop, publisher, gauges, drop-in)."""
ALLOWED = {
    "hoptrace.pipeline": ("hoptrace.pipeline",),
    "hoptrace.workers": ("hoptrace.pipeline", "hoptrace.workers"),
    "hoptrace.producers": ("hoptrace.pipeline", "hoptrace.producers"),
    "hoptrace.gauges": ("hoptrace.pipeline", "hoptrace.gauges"),
    "hoptrace.view": ("hoptrace.pipeline.semconv", "hoptrace.view"),
    "hoptrace.instrumentation": ("hoptrace.pipeline", "hoptrace.clients.redis.keep_channel", "hoptrace.instrumentation"),
    "hoptrace.clients.redis": ("hoptrace.pipeline", "hoptrace.gauges", "hoptrace.clients.redis"),
    **{client: (*ENGINES, client) for client in CLIENT_FOLDERS if client != "hoptrace.clients.redis"},
}
PACKAGES = {package: folder(package) for package in ALLOWED}


CLIENT_LIBRARIES = tuple(library for libraries in CLIENT_FOLDERS.values() for library in libraries)
"""The messaging clients' libraries, none of which the ground floor imports."""


def imports(path: Path) -> set[str]:
    """Every module PATH imports by absolute name, at any depth of its code (``from X import y`` gives ``X.y`` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def hoptrace_imports(path: Path) -> set[str]:
    """Every ``hoptrace...`` module PATH imports, at any depth of its code."""
    return {name for name in imports(path) if name == "hoptrace" or name.startswith("hoptrace.")}


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    """NAME is one of PREFIXES, inside one, or a package on the way to one (``from hoptrace.pipeline import semconv``)."""
    return any(name == prefix or name.startswith(prefix + ".") or prefix.startswith(name + ".") for prefix in prefixes)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_imports_only_what_its_floor_allows(package: str) -> None:
    wrong = {
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for path in PACKAGES[package].rglob("*.py")
        for name in hoptrace_imports(path)
        if not _allowed(name, ALLOWED[package])
    }
    assert wrong == set()


def test_every_package_folder_is_where_the_folder_rule_puts_it_and_ships() -> None:
    shipped = set(SETUPTOOLS["packages"])
    found = {package(init.parent) for top in ("hoptrace", *MAPPED.values()) for init in (REPOSITORY / top).rglob("__init__.py")}
    assert {name for name in shipped if not folder(name).is_dir()} == set()
    assert found - shipped == set()  # a package folder left out of pyproject's list would not be installed
    assert all(folder(name) == init.parent for init in (REPOSITORY / "pipeline").rglob("__init__.py") for name in [package(init.parent)])
    mapped_inits = [init for top in MAPPED.values() for init in (REPOSITORY / top).rglob("__init__.py")]
    assert [str(init.relative_to(REPOSITORY)) for init in mapped_inits if GUARD not in init.read_text()] == []


GUARD = 'if not __name__.startswith("hoptrace."):'
"""The line with which every package under a mapped folder refuses another name (a second copy of its modules)."""


def test_the_ground_floor_imports_no_client_library() -> None:
    wrong = {
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for path in PACKAGES["hoptrace.pipeline"].rglob("*.py")
        for name in imports(path)
        if name.split(".")[0] in CLIENT_LIBRARIES
    }
    assert wrong == set()


def test_a_client_library_is_imported_only_in_its_client_folders() -> None:
    owners: dict[str, list[str]] = {}
    for client, libraries in CLIENT_FOLDERS.items():
        for library in libraries:
            owners.setdefault(library, []).append(client)
    wrong = {
        f"{path.relative_to(REPOSITORY)} imports {name}"
        for top in ("hoptrace", *MAPPED.values())
        if top != MAPPED["hoptrace.examples"]  # the example pipeline is a user's code: its handlers use whatever clients they like
        for path in (REPOSITORY / top).rglob("*.py")
        for name in imports(path)
        if (clients := owners.get(name.split(".")[0])) is not None and not any(path.is_relative_to(folder(client)) for client in clients)
    }
    assert wrong == set()


def test_only_the_command_line_imports_the_viewer() -> None:
    importers = {
        str(path.relative_to(REPOSITORY))
        for folder in (*PACKAGES.values(), REPOSITORY / "hoptrace")
        for path in folder.rglob("*.py")
        if path.parent != PACKAGES["hoptrace.view"] and any(name.startswith("hoptrace.view") for name in hoptrace_imports(path))
    }
    assert importers <= {f"hoptrace/{name}" for name in ("demo.py", "reading.py", "watch.py", "monitor.py", "critical_times.py")}


def test_help_loads_no_heavy_library() -> None:
    heavy = ("celery", "kafka", "grpc", "sqlite3", "redis", "opentelemetry.sdk", "rich.console")
    probe = "\n".join(
        [
            "import sys",
            "sys.argv = ['hoptrace', '--help']",
            "from hoptrace.cli import main",
            "try:\n    main()\nexcept SystemExit:\n    pass",
            f"print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m.startswith({heavy!r})))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"
