"""The CUDA / C++ sources: the hand-written ones in ``cuda/`` (``snnexp/cuda/`` in an installed wheel, the checkout's
top-level ``cuda/`` in a source install) and the ones :mod:`snnexp.kernels.generate` writes from the neuron
declarations, which :func:`read` serves by name like the others.

``cuda/`` has no ``__init__.py`` on purpose: as a regular package, run from the repository root it would shadow
NVIDIA's ``cuda`` namespace package, which torch and CuPy import. Being a plain data folder, it is found by path.

``kernel_source()`` is the generated ``neuron_kernels.cu`` with its local includes (``neuron_steps.cuh``,
``neuron_math.cuh``, ...) expanded inline, so NVRTC needs no include path for our own headers (only the CUDA
toolkit's, for ``cuda_fp16.h``); the host build gets the directories (:func:`source_dir`, and the generated files
written out by :mod:`snnexp.kernels.cpu`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from pathlib import Path


MATH_HEADER = "neuron_math.cuh"  # hand-written: the prelude of the generated step math
DEVICE_HEADER = "neuron_device.cuh"  # hand-written: CUDA helpers of the generated kernels
HOST_HEADER = "neuron_host.cuh"  # hand-written: CPU helpers of the generated loops
CPU_SOURCE = "neuron_cpu.cpp"  # hand-written: output buffers, includes the generated bindings
KERNELS = "neuron_kernels.cu"  # generated

_LOCAL_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)


@functools.cache
def cuda_dir() -> Path:
    """The folder holding the sources: inside the installed package, else beside it in a source checkout."""
    package = Path(__file__).resolve().parents[1]  # the snnexp package directory
    for candidate in (package / "cuda", package.parent / "cuda"):
        if (candidate / MATH_HEADER).is_file():
            return candidate
    raise FileNotFoundError(f"snnexp's CUDA sources ({MATH_HEADER}) are neither in {package / 'cuda'} nor in "
                            f"{package.parent / 'cuda'}; reinstall snnexp")


@functools.cache
def generated() -> dict[str, str]:
    """The generated sources, name -> text (once per process: the declarations are fixed once imported)."""
    from snnexp.kernels.generate import generated as generate

    return generate()


def read(name: str) -> str:
    """The text of source ``name``: generated, or ``cuda/<name>``."""
    found = generated().get(name)
    return found if found is not None else _read_file(name)


@functools.cache
def _read_file(name: str) -> str:
    return (cuda_dir() / name).read_text(encoding="utf-8")


def expand(name: str, _seen: frozenset[str] = frozenset()) -> str:
    """``cuda/<name>`` with its ``#include "local.cuh"`` lines replaced by the files themselves (once each)."""

    def include(match: re.Match) -> str:
        inner = match.group(1)
        if inner in _seen:
            return ""
        return expand(inner, _seen | {name, inner})

    return _LOCAL_INCLUDE.sub(include, read(name))


@functools.cache
def kernel_source() -> str:
    """The generated ``neuron_kernels.cu`` with its local headers inlined: the NVRTC source of every variant."""
    return expand(KERNELS)


def digest(*names: str) -> str:
    """A short hash of the named sources (cache key for compiled artefacts)."""
    sha = hashlib.sha256()
    for name in names:
        sha.update(read(name).encode())
    return sha.hexdigest()[:16]


@contextlib.contextmanager
def source_dir():
    """A real directory holding ``cuda/``."""
    yield cuda_dir()


@functools.cache
def cuda_include_dirs() -> tuple[str, ...]:
    """Directories holding ``cuda_fp16.h`` / ``cuda_bf16.h``: the pip ``nvidia`` packages, then CUDA_PATH/nvcc."""
    import os
    import shutil
    import sys

    candidates: list[Path] = []
    for entry in sys.path:
        base = Path(entry) / "nvidia"
        if base.is_dir():
            candidates += [base / "cu13" / "include", base / "cuda_runtime" / "include", base / "cu12" / "include"]
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    found = [str(c) for c in candidates if (c / "cuda_fp16.h").is_file()]
    return tuple(dict.fromkeys(found))
