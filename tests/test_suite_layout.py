"""The test suite's own layout (docs/testing.md): no test module is imported by
another (shared helpers and fixtures live in modules that are not tests), and a
test file's name says whether it needs the cluster (`*_e2e.py`) or not (`*_unit.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "image" not in p.relative_to(TESTS).parts)


def _package_of(path: Path) -> str:
    return ".".join(("tests", *path.relative_to(TESTS).parent.parts))


def _imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` imports, relative imports resolved against `package`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            found.add(base)
            # `from tests import test_x` imports the module test_x.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _is_test_module(name: str) -> bool:
    return name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")


def test_no_test_module_is_imported_by_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): sorted(
            m for m in _imported_modules(path.read_text(), _package_of(path)) if _is_test_module(m)
        )
        for path in _python_files()
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"move what these share into a helper module (not test_*.py): {offenders}"


def test_every_form_of_import_is_seen() -> None:
    """The check above would pass vacuously if it missed an import form; each form here must be seen."""
    source = "\n".join(
        [
            "from tests.test_e2e import Env",
            "from tests import test_spec",
            "import tests.test_plan",
            "from .. import test_report",
        ]
    )
    seen = {m for m in _imported_modules(source, "tests.cluster") if _is_test_module(m)}
    assert seen == {"tests.test_e2e", "tests.test_spec", "tests.test_plan", "tests.test_report"}


def test_file_names_say_whether_a_test_needs_the_cluster() -> None:
    e2e = sorted(TESTS.glob("test_*_e2e.py"))
    unit = sorted(TESTS.glob("test_*_unit.py"))
    assert e2e, "no *_e2e.py files found"
    assert unit, "no *_unit.py files found"
    unmarked = [p.name for p in e2e if "pytest.mark.cluster" not in p.read_text()]
    assert unmarked == [], f"*_e2e.py files run on the cluster, yet these mark no test `cluster`: {unmarked}"
    marked = [p.name for p in unit if "pytest.mark.cluster" in p.read_text()]
    assert marked == [], f"*_unit.py files must not need the cluster: {marked}"
