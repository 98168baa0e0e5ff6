"""The CUDA sources (snnexp/kernels/sources.py) load from the package with the math header inlined."""

from snnexp.kernels import sources


def test_sources_load_from_the_package_with_the_math_header_inlined():
    src = sources.kernel_source()
    assert "multistep_forward" in src and "backward_step" in src
    assert '#include "neuron_math.cuh"' not in src
    assert sources.read("neuron_math.cuh").count("__host__ __device__") >= 1
