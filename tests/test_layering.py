"""The package's layering holds: import-linter's contracts in pyproject.toml (layers, the core importing nothing
from methods/, no import cycle at any depth) are kept, and methods/ holds one paper per file and nothing else."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import REPO


def test_import_linter_contracts_are_kept():
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint) if lint.exists() else "lint-imports", str(REPO / "pyproject.toml")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_methods_package_holds_one_paper_per_file():
    """Each module of snnexp/methods defines exactly one Method subclass and cites its paper (or says it has none)
    in its docstring; the shared plumbing lives in snnexp/training."""
    from snnexp.training.method import Method

    import importlib
    import inspect

    files = sorted(p for p in (REPO / "snnexp" / "methods").glob("*.py") if p.name != "__init__.py")
    assert files
    for path in files:
        module = importlib.import_module(f"snnexp.methods.{path.stem}")
        own = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Method) and c.__module__ == module.__name__]
        assert len(own) == 1, f"{path.name} defines {[c.__name__ for c in own]}"
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring.splitlines()) >= 2, f"{path.name} needs a docstring naming its paper"
