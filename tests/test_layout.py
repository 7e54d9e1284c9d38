"""The house a newcomer finds their way in: every room listed where they look first, and the direction of
imports (scripts and benchmarks stand on utils/, utils/ on nothing above it).

Read from the source with ``ast`` (nothing is imported), so a module added without its line in the package
list, or a library module that reaches up into a script, fails here by name.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UTILS = ROOT / "utils"
PACKAGES = sorted(p for p in UTILS.rglob("__init__.py") if "__pycache__" not in p.parts)
# The top-level scripts; modified_classifier.py is Task 3's model, kept at the top where the study's
# design card puts it, and the one top-level module the benchmarks may import.
SCRIPTS = sorted(p.stem for p in ROOT.glob("*.py"))
MODEL_MODULE = "modified_classifier"
MAX_MODULES = 13  # "no flat list of more than ~12": the largest package today, utils/inference, has 13


def listed(package_init: Path, heading: str) -> tuple[list[str], str]:
    """(the ``name`` entries of the docstring's list under the line starting with ``heading``, that line)."""
    doc = ast.get_docstring(ast.parse(package_init.read_text())) or ""
    found = re.search(rf"^{heading}[^\n]*:$", doc, flags=re.MULTILINE)
    assert found, f"{package_init.relative_to(ROOT)}: its docstring has no '{heading} ...:' list"
    return re.findall(r"^- ``(\w+)``:", doc[found.end():], flags=re.MULTILINE), found.group(0)


def rooms(folder: Path) -> list[str]:
    modules = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
    packages = [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()]
    return sorted(modules + packages)


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names in the file, at any depth (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_utils_lists_its_packages_in_pipeline_order_and_each_one_exists():
    packages, _ = listed(UTILS / "__init__.py", "Packages")
    assert sorted(packages) == [p for p in rooms(UTILS)]
    assert packages[:2] == ["core", "data"] and packages[-1] == "scaffold"  # foundations first, the scaffold on top


@pytest.mark.parametrize("package_init", [p for p in PACKAGES if p.parent != UTILS],
                         ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_every_package_lists_exactly_its_modules_and_stays_small(package_init):
    names, heading = listed(package_init, "Modules")
    if "order" not in heading:  # "Modules, in the order a volume is made:" (the phantom) keeps its own order
        assert sorted(names) == names, "the list is alphabetical, so a newcomer scans it"
    assert sorted(names) == rooms(package_init.parent)
    assert len(names) <= MAX_MODULES


@pytest.mark.parametrize("path", sorted(UTILS.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_code_never_imports_a_script(path):
    reaching_up = {name for name in imported_modules(path) if name.split(".")[0] in SCRIPTS}
    assert not reaching_up, f"{path.relative_to(ROOT)} imports {sorted(reaching_up)}"


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_import_utils_not_scripts(path):
    scripts = {name for name in imported_modules(path) if name.split(".")[0] in set(SCRIPTS) - {MODEL_MODULE}}
    assert not scripts, f"benchmarks/{path.name} imports {sorted(scripts)}"


def test_every_package_imports_first_in_a_fresh_interpreter():
    """A re-export that closes an import cycle breaks only the scripts that import that package first; each
    package is imported first here, in its own process (all at once: the cost is one torch import each)."""
    packages = [".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGES]
    runs = {name: subprocess.Popen([sys.executable, "-c", f"import {name}"], cwd=ROOT, stderr=subprocess.PIPE,
                                   text=True) for name in packages}
    failed = {name: run.communicate()[1].strip().splitlines()[-1] for name, run in runs.items() if run.wait() != 0}
    assert not failed, failed
