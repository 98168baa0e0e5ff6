"""Fused spiking-neuron kernels.

- :mod:`snnexp.kernels.spec` / :mod:`snnexp.kernels.expr`: how a neuron declares its dynamics once (expressions
  evaluated by torch and translated to C), and the registry the neuron modules fill when imported.
- :mod:`snnexp.kernels.generate`: the per-step math, CUDA kernels and CPU loops written from the declarations.
- :mod:`snnexp.kernels.cupy_ops`: the generated CUDA kernels compiled per variant with CuPy (NVRTC), as
  ``torch.library`` custom ops; ``backend="cupy"`` (and ``"auto"`` on CUDA tensors).
- :mod:`snnexp.kernels.cpu`: the generated CPU loops built as a torch C++ extension; ``backend="auto"`` on the CPU.
- :mod:`snnexp.kernels.variants`: the compile-time variants and which inputs have a kernel (``has_kernel``).
- :mod:`snnexp.kernels.winograd`: 3x3 convolutions by Winograd on the CPU, F(4x4, 3x3) for stride 1 and a
  polyphase F(3x3, 2x2) for stride 2 (tile transforms in C++, built like the neuron extension); models switch to
  it through ``snnexp.models.winograd``.
- :mod:`snnexp.kernels.strided_conv`: stride-2 convolutions on the CPU as im2col matrix products (the backward of
  3x3 ones, im2col loops in C++; both passes of 1x1 ones); models switch to it through
  ``snnexp.models.strided_conv``.

This package imports no neuron module by name (the registry imports ``snnexp.neurons`` as a plugin scan):
``snnexp.neurons.functional`` decides which backend runs a call, and ``python -m snnexp.neurons --check`` checks
these kernels against the neurons' reference.
"""

from __future__ import annotations

import functools
import warnings
from importlib import import_module

_import_error: BaseException | None = None


@functools.cache
def cupy_available() -> bool:
    """True when CuPy imports and sees a CUDA device. If the import fails, the real error is kept
    (:func:`cupy_import_error`) and shown once as a warning (when CUDA itself is there)."""
    global _import_error
    try:
        import_module("cupy")
    except Exception as error:  # ImportError, or CUDA libraries that fail to load
        _import_error = error
        import torch

        if torch.cuda.is_available():
            warnings.warn(
                f"snnexp: the CuPy neuron kernels are unavailable because importing CuPy failed: "
                f"{type(error).__name__}: {error}. Neurons use the torch backend; install CuPy for your CUDA "
                "version (`pip install snnexp[cuda]`, i.e. cupy-cuda13x) to enable them.",
                RuntimeWarning,
                stacklevel=2,
            )
        return False
    import torch

    return torch.cuda.is_available()


def cupy_import_error() -> BaseException | None:
    """The exception raised by importing CuPy, if :func:`cupy_available` found it failing."""
    cupy_available()
    return _import_error
