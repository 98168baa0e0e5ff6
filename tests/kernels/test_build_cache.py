"""The build cache of the fused CPU extension (snnexp/kernels/cpu.py: ``load_cached``, ``build_name``), driven with
a stand-in C++ module of a few lines that builds in about a second instead of the real kernels: environments that
build differently never rebuild each other's build, processes that start together build (and say so) once, and
the build's name changes with every input that changes the build.

Each load runs in a fresh subprocess (torch keeps a loaded extension per process) with ``TORCH_EXTENSIONS_DIR`` in
a temporary folder and ``CXX`` a wrapper that logs every compiler call, so the tests count real compiles and links
instead of timing anything."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import REPO
from snnexp.kernels.cpu import build_name

COMPILER = shutil.which(os.environ.get("CXX", "c++"))
pytestmark = pytest.mark.skipif(not (os.name == "posix" and COMPILER and shutil.which("ninja")),
                                reason="needs a POSIX shell, a C++ compiler and ninja")

BUILDING = "snnexp: building"

# A Python module with one function, value(), returning VALUE from the value.h its include path finds. Python.h
# only, not torch's headers, so that a build takes about a second.
STAND_IN = r"""
#include <Python.h>
#include "value.h"
#define SNN_CAT2(a, b) a##b
#define SNN_CAT(a, b) SNN_CAT2(a, b)
#define SNN_STR2(a) #a
#define SNN_STR(a) SNN_STR2(a)
static PyObject* value(PyObject*, PyObject*) { return PyLong_FromLong(VALUE); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, "VALUE"}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module = {PyModuleDef_HEAD_INIT, SNN_STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
PyMODINIT_FUNC SNN_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module); }
"""

# One process of a run: wait at the barrier (when given) until every process is up, then load and call the module.
LOAD = r"""
import json, sys, time
from pathlib import Path
from snnexp.kernels.cpu import load_cached

args = json.loads(sys.argv[1])
if args["barrier"]:
    folder, count = Path(args["barrier"][0]), args["barrier"][1]
    (folder / f"ready-{args['index']}").touch()
    deadline = time.monotonic() + 600
    while len(list(folder.glob("ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
module = load_cached("standin", args["files"], include_paths=args["include_paths"], what="the stand-in module",
                     usually="about a second")
print("value", module.value())
"""


class Cache:
    """A temporary extension directory, a logging compiler and the stand-in's sources, for runs in subprocesses."""

    def __init__(self, root: Path):
        self.root, self.extensions, self.log = root, root / "extensions", root / "cxx.log"
        self.source = self.write("src/standin.cpp", STAND_IN)
        self.cxx = self.write("bin/cxx", f'#!/bin/sh\necho "$*" >> "{self.log}"\nexec "{COMPILER}" "$@"\n')
        self.cxx.chmod(self.cxx.stat().st_mode | stat.S_IEXEC)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def environment(self, name: str, value: int) -> str:
        """An include folder whose value.h defines VALUE: one per environment (as venvs differ in include paths)."""
        return str(self.write(f"{name}/value.h", f"#define VALUE {value}\n").parent)

    def args(self, include: str, barrier=None, index=0) -> str:
        """The arguments of one process: load the stand-in with ``include``, after ``barrier`` (folder, count)."""
        return json.dumps({"files": [str(self.source)], "include_paths": [include], "barrier": barrier,
                           "index": index})

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SNNEXP_VERBOSE_BUILD", "MAX_JOBS")}
        return {**env, "TORCH_EXTENSIONS_DIR": str(self.extensions), "CXX": str(self.cxx),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}

    def start(self, args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", LOAD, args], cwd=REPO, env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self, process: subprocess.Popen) -> tuple[int, str | None]:
        """The value the process's module returned, and the process's announcement of a build (None without)."""
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        (value,) = [int(line.split()[1]) for line in out.splitlines() if line.startswith("value ")]
        announcements = [line for line in err.splitlines() if line.startswith(BUILDING)]
        assert len(announcements) <= 1, err
        return value, (announcements or [None])[0]

    def run(self, args: str) -> tuple[int, str | None]:
        return self.finish(self.start(args))

    def calls(self, marker: str) -> int:
        """Compiler calls so far whose command line holds ``marker`` (" -c ": compiles, "-shared": links)."""
        return sum(marker in line for line in self.log.read_text().splitlines()) if self.log.exists() else 0

    def libraries(self) -> dict[str, int]:
        """Every built library under the extension directory, with its modification time (ns)."""
        return {str(p.relative_to(self.extensions)): p.stat().st_mtime_ns for p in self.extensions.rglob("*.so")}


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path)


def test_two_environments_alternating_build_once_each_and_never_rebuild_each_other(cache):
    a, b = cache.args(cache.environment("venv_a", 1)), cache.args(cache.environment("venv_b", 2))

    value_a, announced_a = cache.run(a)
    value_b, announced_b = cache.run(b)
    assert (value_a, value_b) == (1, 2) and announced_a and announced_b
    for part in ("the stand-in module", "for this environment, once", "about a second", str(cache.extensions)):
        assert part in announced_a  # what is built, that it happens once, how long it takes, where it goes
    built = cache.libraries()
    assert len(built) == 2 and cache.calls(" -c ") == 2 and cache.calls("-shared") == 2

    # A, B again, each in a fresh process: each loads its own build, says nothing, compiles and links nothing
    assert cache.run(a) == (1, None)
    assert cache.run(b) == (2, None)
    assert cache.libraries() == built
    assert cache.calls(" -c ") == 2 and cache.calls("-shared") == 2


def test_processes_started_together_build_once_and_both_load_it(cache):
    include, ready = cache.environment("venv", 7), cache.root / "ready"
    ready.mkdir()
    processes = [cache.start(cache.args(include, barrier=[str(ready), 2], index=i)) for i in range(2)]
    results = [cache.finish(p) for p in processes]

    assert [value for value, _ in results] == [7, 7]
    assert sum(announced is not None for _, announced in results) == 1
    assert cache.calls(" -c ") == 1 and cache.calls("-shared") == 1
    assert len(cache.libraries()) == 1


def test_a_changed_source_is_rebuilt_under_a_new_name(cache):
    args = cache.args(cache.environment("venv", 1))
    assert cache.run(args)[0] == 1
    cache.source.write_text(STAND_IN.replace("PyLong_FromLong(VALUE)", "PyLong_FromLong(VALUE + 10)"))

    value, announced = cache.run(args)
    assert value == 11 and announced
    assert len(cache.libraries()) == 2 and cache.calls("-shared") == 2


def test_the_name_is_the_same_for_the_same_inputs_and_differs_when_any_input_differs(tmp_path):
    source, header, moved = tmp_path / "a.cpp", tmp_path / "a.h", tmp_path / "checkout2" / "a.cpp"
    source.write_text("int f() { return 1; }\n")
    header.write_text("#define A 1\n")
    moved.parent.mkdir()
    moved.write_text(source.read_text())
    inputs = dict(include_paths=[str(tmp_path)], cflags=["-O3"], ldflags=["-lm"])

    def name(files=(source, header), **changes):
        return build_name("standin", list(files), **{**inputs, **changes})

    base = name()
    assert base.startswith("standin_") and name() == base
    assert name(files=(moved, header)) != base  # another checkout: the same text at another path
    assert name(include_paths=[str(tmp_path / "venv2")]) != base  # another virtual environment
    assert name(cflags=["-O2"]) != base
    assert name(ldflags=[]) != base
    header.write_text("#define A 2\n")
    assert name() != base
