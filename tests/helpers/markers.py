"""Skip markers for the fused kernels, shared by the kernel and neuron-check tests."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from snnexp.kernels import cpu

HAS_CUPY = importlib.util.find_spec("cupy") is not None
needs_cupy = pytest.mark.skipif(not HAS_CUPY, reason="CuPy (snnexp[cuda]) is not installed")
needs_host_build = pytest.mark.skipif(not cpu.available(), reason="the CPU extension cannot be built here")
needs_cuda_and_cupy = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUPY),
                                         reason="needs a CUDA device and CuPy")
