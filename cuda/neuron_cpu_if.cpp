// The CPU fused path's IF neuron, forward and backward (see neuron_cpu.cuh), in its own translation unit.
#include "neuron_cpu.cuh"

namespace snn {
namespace cpu {
SNN_CPU_KIND(, SNN_IF)
}  // namespace cpu
}  // namespace snn
