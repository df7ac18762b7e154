"""The shape of the code (STYLE.md 2, 12, 15; docs/architecture.md): no import circles anywhere, imports inside
functions included; ``shared/`` split into sub-packages that each say what they own and which siblings they may
import, and keep to it; no module of ``shared/`` over 500 lines; ``shared/`` never imports ``azure.functions``.

The import graph is grimp's (the engine of import-linter): it reads every ``import`` statement, those inside
functions too, so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "blueprints", "devhost", "emulator", "bench", "stack")
MAX_LINES = 500
# The composition root: the one module of shared/ that may know every sub-package.
ROOT_MODULES = {"shared", "shared.services"}


def graph(type_checking: bool) -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=not type_checking, cache_dir=None)


def circles(g: grimp.ImportGraph, modules: set[str]) -> list[tuple[str, ...]]:
    """Each import A -> B of ``modules`` for which B also reaches A: the shortest circle through it."""
    found = set()
    for importer in sorted(modules):
        for imported in g.find_modules_directly_imported_by(importer):
            back = g.find_shortest_chain(importer=imported, imported=importer)
            if back:
                ring = (importer, *back)
                start = ring.index(min(ring[:-1]))  # one spelling per circle, whichever edge found it
                found.add(ring[start:-1] + ring[:start] + (ring[start],))
    return sorted(found)


def test_no_import_circles_in_any_package_imports_inside_functions_included():
    g = graph(type_checking=False)
    found = circles(g, set(g.modules))
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_shared_has_no_circle_even_counting_type_only_imports():
    """Type-only imports are not executed, but a circle of them is still two modules that need each other."""
    g = graph(type_checking=True)
    found = circles(g, {m for m in g.modules if m.split(".")[0] == "shared"})
    assert not found, "type-level import circles in shared/:\n" + "\n".join(" -> ".join(c) for c in found)


def subpackages() -> list[str]:
    return sorted(p.parent.name for p in (REPO / "shared").glob("*/__init__.py"))


def declared_siblings(package: str) -> set[str]:
    """The siblings a sub-package's docstring allows it to import: a line ``May import: base, tokens`` (or none)."""
    doc = ast.get_docstring(ast.parse((REPO / "shared" / package / "__init__.py").read_text())) or ""
    match = re.search(r"^May import:\s*(.*)$", doc, re.M)
    assert match, f"shared/{package}/__init__.py: the docstring must say which siblings it may import ('May import:')"
    names = {n.strip().strip(".") for n in re.split(r"[,\s]+", match.group(1)) if n.strip().strip(".")}
    return names - {"nothing", "none"}


def test_shared_is_split_into_subpackages_that_say_what_they_own():
    packages = subpackages()
    assert len(packages) >= 4, f"shared/ sub-packages: {packages}"
    loose = sorted(
        f"shared.{p.stem}"
        for p in (REPO / "shared").glob("*.py")
        if f"shared.{p.stem}" not in ROOT_MODULES | {"shared.__init__"}
    )
    assert not loose, f"modules of shared/ outside a sub-package (only the composition root may be): {loose}"
    for package in packages:
        doc = ast.get_docstring(ast.parse((REPO / "shared" / package / "__init__.py").read_text())) or ""
        assert len(doc.split()) >= 15, f"shared/{package}/__init__.py: say what the package owns"
        unknown = declared_siblings(package) - set(packages)
        assert not unknown, f"shared/{package}: 'May import' names no sibling package: {unknown}"


@pytest.mark.parametrize("package", subpackages() or ["(none yet)"])
def test_each_subpackage_imports_only_the_siblings_it_declares(package):
    if package == "(none yet)":
        pytest.fail("shared/ has no sub-packages")
    g = graph(type_checking=True)
    allowed = declared_siblings(package) | {package}
    for importer in g.find_descendants(f"shared.{package}") | {f"shared.{package}"}:
        for imported in g.find_modules_directly_imported_by(importer):
            parts = imported.split(".")
            if parts[0] != "shared":
                continue
            assert len(parts) > 1 and parts[1] in allowed, (
                f"{importer} imports {imported}: shared/{package} may import only {sorted(allowed - {package})}"
            )


def doors(package: str) -> set[str]:
    """The modules of a sub-package its siblings may import, from a line ``Door: admission`` (none: all of them)."""
    doc = ast.get_docstring(ast.parse((REPO / "shared" / package / "__init__.py").read_text())) or ""
    match = re.search(r"^Door:\s*(.*)$", doc, re.M)
    names = re.split(r"[,\s]+", match.group(1)) if match else []
    return {f"shared.{package}.{n.strip().strip('.')}" for n in names if n.strip().strip(".")}


def test_pacing_is_entered_only_through_its_door():
    """Issue 24: the sender asks pacing one question and reports once (shared/pacing/admission.py); the budget's
    row, view and shares stay inside. Only the composition root, which builds the budget, may know more."""
    door = doors("pacing")
    assert door == {"shared.pacing.admission"}, f"shared/pacing/__init__.py: 'Door:' names {sorted(door)}"
    g = graph(type_checking=True)
    inside = g.find_descendants("shared.pacing") - door
    for importer in sorted(g.modules - g.find_descendants("shared.pacing") - ROOT_MODULES - {"shared.pacing"}):
        if not importer.startswith(("shared.", "blueprints.")):
            continue
        reached = g.find_modules_directly_imported_by(importer) & inside
        assert not reached, f"{importer} imports {sorted(reached)}: outside shared/pacing only {sorted(door)}"


def test_no_module_of_shared_is_over_500_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "shared").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_shared_never_imports_azure_functions():
    """shared/ is the library: usable from a CLI or another host; only blueprints/ know the Functions model."""
    offenders = []
    for path in (REPO / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(REPO)}: {n}"
                for n in names
                if n == "azure.functions" or n.startswith("azure.functions.")
            ]
    assert not offenders, offenders
