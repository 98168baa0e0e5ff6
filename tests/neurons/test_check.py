"""The kernel check (snnexp/neurons/check.py and ``python -m snnexp.neurons --check``): every CUDA variant compiles
with NVRTC (needs CuPy, no GPU), and the shared step math compiled for the host equals the torch reference for every
variant."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers.markers import HAS_CUPY, needs_cupy, needs_host_build
from snnexp.kernels.variants import ARCHS, all_variants
from snnexp.neurons import check


@needs_cupy
@pytest.mark.parametrize("arch", ARCHS)
def test_every_variant_compiles_with_nvrtc(arch):
    results = check.check_nvrtc(all_variants(), archs=(arch,))
    failed = [f"{r.variant.label}: {r.detail}" for r in results if not r.ok]
    assert len(results) == len(all_variants()) and not failed, failed[:5]


@needs_host_build
def test_host_compiled_step_math_equals_torch_reference_for_every_variant():
    results = check.check_host(all_variants(dtypes=(torch.float32,)))
    failed = [f"{r.variant.label}: {r.detail}" for r in results if not r.ok]
    assert len(results) == len(all_variants(dtypes=(torch.float32,))) >= 120 and not failed, failed[:5]


@needs_host_build
def test_check_command_prints_a_table_and_passes():
    args = [sys.executable, "-m", "snnexp.neurons", "--check"] + ([] if HAS_CUPY else ["--no-nvrtc"])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "lif/hard/attach/decay_input/sigmoid/float32" in proc.stdout
    assert "checks passed" in proc.stdout
