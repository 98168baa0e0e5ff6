"""The fused neuron code, generated from the declarations (:mod:`snnexp.kernels.spec`) and the surrogates' formulas:
the per-step math (``neuron_steps.cuh``, host and device), the CUDA kernels (``neuron_kernels.cu``, compiled by
NVRTC per variant) and the CPU loops and their tensor bindings (built as one torch extension).

Every neuron ``P`` gets, in namespace ``snn::P``: ``Params`` and ``State`` structs, ``initial``, ``charge``,
``fire_reset`` (forward), ``membrane_after`` and ``backward_step`` (the chain rule over the declared partials);
the kernels ``snn::P_forward<scalar_t, KIND?, switches...>`` and ``snn::P_backward<..., DETACH, SG>``; on the
CPU, ``P_forward`` / ``P_backward`` taking float32 ``[T, N]`` tensors. The expressions compile in the order they
are written and without FMA contraction, so float32 spikes equal the torch reference bit for bit.
"""

from __future__ import annotations

from snnexp.kernels import expr
from snnexp.kernels.spec import MAX_LEVELS, SWITCHES, NeuronSpec, registered, surrogates

STEPS = "neuron_steps.cuh"
KERNELS = "neuron_kernels.cu"
CPU_DECLS = "neuron_cpu_decls.cuh"
BINDINGS = "neuron_bindings.inc"


# ------------------------------------------------------------------------------------------- expressions


def _c(spec: NeuronSpec, text: str) -> str:
    rename = {name: SWITCHES[name] for name in spec.switches}
    rename.update({name: "true" if value else "false" for name, value in spec.fixed.items()})
    rename["level"] = "static_cast<float>(level)"
    return expr.to_c(text, rename, spec.kinds)


def _tparams(spec: NeuronSpec, backward: bool) -> list[str]:
    out = ["int KIND"] if len(spec.kinds) > 1 else []
    out += [f"bool {SWITCHES[s]}" for s in spec.switches]
    return out + (["bool DETACH", "int SG"] if backward else [])


def _targs(spec: NeuronSpec, backward: bool) -> str:
    return ", ".join(p.split()[1] for p in _tparams(spec, backward))


def _t(args: str) -> str:
    """Explicit template arguments, if any."""
    return f"<{args}>" if args else ""


def _template(params: list[str]) -> str:
    return f"template <{', '.join(params)}>\n" if params else ""


def _unpack(spec: NeuronSpec, state: bool = True) -> str:
    """Locals for the parameters, the state before the step and the lets (those computable here)."""
    lines = [f"    [[maybe_unused]] const float {p.name} = p.{p.name};" for p in spec.params]
    known = {p.name for p in spec.params} | set(spec.switches) | set(spec.fixed) | {"kind", "level"}
    if state:
        lines += [f"    [[maybe_unused]] const float {v} = st.{v};" for v in spec.state]
        known |= set(spec.state)
    for name, text in spec.lets.items():
        if expr.names(text) <= known:
            lines.append(f"    [[maybe_unused]] const float {name} = {_c(spec, text)};")
            known.add(name)
    return "\n".join(lines)


def _sum(terms: list[str]) -> str:
    return " + ".join(terms) if terms else "0.0f"


# --------------------------------------------------------------------------------------------- step math


def _surrogates() -> str:
    cases = "\n".join(f"    if (SG == {i}) return {expr.to_c(formula)};  // {name}"
                      for i, (name, formula) in enumerate(surrogates().items()))
    return ("// dS/dx of each surrogate at x = u (the declared formulas of snnexp/neurons/surrogate.py)\n"
            f"template <int SG>\nSNN_HD float surrogate(float x, float alpha, float width) {{\n{cases}\n"
            "    return 0.0f;\n}\n")


def _steps(spec: NeuronSpec) -> str:
    P, tf, tb = spec.name, _template(_tparams(spec, False)), _template(_tparams(spec, True))
    fields = lambda names: " ".join(f"float {n};" for n in names)  # noqa: E731
    assign = "\n".join(f"    const float next_{v} = {_c(spec, spec.reset[v])};" for v in spec.state)
    store = "\n".join(f"    st.{v} = next_{v};" for v in spec.state)
    init = "\n".join(f"    st.{v} = {_c(spec, spec.init[v])};" for v in spec.state)
    fire = (f"    const float u = {_c(spec, spec.fire)};\n"
            f"    const float s = {_c(spec, spec.spike)};")
    grads = [f"float& grad_{p.name}" for p in spec.learnable]

    def partial(table: dict, name: str) -> str | None:
        text = table.get(name)
        return None if text is None else f"({_c(spec, text)})"

    def via_reset(name: str) -> list[str]:
        """The terms of dL/dname through every state variable's update."""
        return [f"gstate_{j} * {partial(spec.dreset[j], name)}" for j in spec.state
                if partial(spec.dreset.get(j, {}), name)]

    chain = [f"    [[maybe_unused]] const float gstate_{v} = g.{v};" for v in spec.state]
    via_s = via_reset("s")
    chain.append("    float gs = grad_out;")
    if via_s:
        chain.append(f"    if (!DETACH) gs = gs + {_sum(via_s)};")
    gh = ([f"gs * {partial(spec.ds, 'h')}"] if partial(spec.ds, "h") else []) + via_reset("h")
    chain.append(f"    const float gh = {_sum(gh)};")

    def total(name: str) -> str:
        terms = [f"gh * {partial(spec.dh, name)}"] if partial(spec.dh, name) else []
        terms += [f"gs * {partial(spec.ds, name)}"] if partial(spec.ds, name) else []
        return _sum(terms + via_reset(name))

    chain += [f"    g.{v} = {total(v)};" for v in spec.state]
    for p in spec.learnable:
        condition = "true" if p.learnable is True else _c(spec, p.learnable)
        chain.append(f"    if ({condition}) grad_{p.name} += {total(p.name)};")
    chain.append(f"    return gh * {partial(spec.dh, 'x') or '0.0f'};")
    chain = "\n".join(chain)
    return f"""
// ---------------------------------------------------------------- {P} ({", ".join(spec.kinds)})
namespace {P} {{

struct Params {{ {fields(p.name for p in spec.params)} }};
struct State {{ {fields(spec.state)} }};

{tf}SNN_HD State initial(const Params& p, int level) {{
{_unpack(spec, state=False)}
    State st;
{init}
    return st;
}}

// h = charge, from the input and the state before the step
{tf}SNN_HD float charge(float x, const State& st, const Params& p, int level) {{
{_unpack(spec)}
    return {_c(spec, spec.charge)};
}}

// fire on h, update the state in place; returns the spike
{tf}SNN_HD float fire_reset(float h, State& st, const Params& p, int level) {{
{_unpack(spec)}
{fire}
{assign}
{store}
    return s;
}}

// the membrane ({spec.state[0]}) after a step, from its charge h and the other state variables before it
{tf}SNN_HD float membrane_after(float h, const State& st, const Params& p, int level) {{
{_unpack(spec)}
{fire}
    return {_c(spec, spec.reset[spec.state[0]])};
}}

// one step of backpropagation through time: g holds dL/dstate after the step, and is left holding dL/dstate
// before it; returns dL/dx; adds dL/dparam to the learnable parameters' accumulators
{tb}SNN_HD float backward_step(float grad_out, State& g, float h, float x, const State& st, const Params& p,
                            int level, float alpha, float width{"".join(", " + a for a in grads)}) {{
{_unpack(spec)}
{fire}
    const float sg = surrogate<SG>(u, alpha, width);
{chain}
}}

}}  // namespace {P}
"""


def steps_source() -> str:
    body = "".join(_steps(spec) for spec in registered())
    return ("// Generated by snnexp/kernels/generate.py from the neuron declarations: the per-step math of every\n"
            "// declared neuron, for the CUDA kernels and the CPU loops alike.\n#pragma once\n"
            f'#include "neuron_math.cuh"\n\nnamespace snn {{\n\n{_surrogates()}{body}\n}}  // namespace snn\n')


# ------------------------------------------------------------------------------------------- CUDA kernels


def _kernel_params(spec: NeuronSpec, backward: bool) -> list[str]:
    scalars = ["const int T", "const long long N"] + (["const int levels"] if spec.levels else [])
    scalars += [f"const float {p.name}" for p in spec.params]
    saved = [f"float* __restrict__ saved_{v}" for v in spec.saved]
    if not backward:
        return (["const scalar_t* __restrict__ x", "scalar_t* __restrict__ out", "scalar_t* __restrict__ h"]
                + saved + scalars)
    inputs = ["const scalar_t* __restrict__ grad_out", "const scalar_t* __restrict__ h"]
    inputs += [f"const {s}" for s in saved] + (["const scalar_t* __restrict__ x"] if spec.reads("x") else [])
    outputs = ["scalar_t* __restrict__ grad_x"] + (["float* __restrict__ grad_params"] if spec.learnable else [])
    return inputs + outputs + scalars + ["const float alpha", "const float width"]


def _kernels(spec: NeuronSpec) -> str:
    P, maxl = spec.name, MAX_LEVELS if spec.levels else 1
    tf, tb = _targs(spec, False), _targs(spec, True)
    tf_c = ", " + tf if tf else ""
    params = "{" + ", ".join(p.name for p in spec.params) + "}"
    levels = "" if spec.levels else "    const int levels = 1;\n"
    hidx = "((long long)l * T + t) * N + i"
    save = "\n".join(f"                saved_{v}[hi] = st[l].{v};" for v in spec.saved)
    load = "\n".join(f"                prev.{v} = saved_{v}[hi];" for v in spec.saved)
    membrane = spec.state[0]
    if spec.reads(membrane):
        before = "\n".join(f"                    before.{v} = saved_{v}[hi - N];" for v in spec.saved)
        recompute = (f"                if (t > 0) {{\n                    {P}::State before = rest[l];\n{before}\n"
                     f"                    prev.{membrane} = {P}::membrane_after{_t(tf)}(to_float(h[hi - N]), before, "
                     f"p, l);\n                }}\n")
    else:
        recompute = ""
    x_arg = ("x != nullptr ? to_float(x[idx]) : 0.0f" if spec.reads("x") else "0.0f")
    learn = spec.learnable
    grad_args = "".join(f", acc[{j}]" for j in range(len(learn)))
    reduce = "".join(
        f"    if ({'true' if p.learnable is True else _c(spec, p.learnable)}) "
        f"block_sum_atomic<SNN_BLOCK>(acc[{j}], grad_params + {j});\n" for j, p in enumerate(learn))
    return f"""
// ---------------------------------------------------------------- {P}
template <typename scalar_t{", " + ", ".join(_tparams(spec, False)) if _tparams(spec, False) else ""}>
__global__ void __launch_bounds__(SNN_BLOCK) {P}_forward({", ".join(_kernel_params(spec, False))}) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
{levels}    const {P}::Params p{params};
    {P}::State st[{maxl}];
#pragma unroll
    for (int l = 0; l < {maxl}; ++l) st[l] = {P}::initial{_t(tf)}(p, l);
    for (int t = 0; t < T; ++t) {{
        const long long idx = (long long)t * N + i;
        const float xt = to_float(x[idx]);
        float total = 0.0f;
#pragma unroll
        for (int l = 0; l < {maxl}; ++l) {{
            if (l < levels) {{
                const long long hi = {hidx};
{save}
                // fire on the stored h (storage dtype), as the backward will
                const scalar_t h_store = from_float<scalar_t>({P}::charge{_t(tf)}(xt, st[l], p, l));
                const float s = {P}::fire_reset{_t(tf)}(to_float(h_store), st[l], p, l);
                h[hi] = h_store;
                total = l == 0 ? s : total + s;
            }}
        }}
        out[idx] = from_float<scalar_t>(total);
    }}
}}

template <typename scalar_t, {", ".join(_tparams(spec, True))}>
__global__ void __launch_bounds__(SNN_BLOCK) {P}_backward({", ".join(_kernel_params(spec, True))}) {{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
{levels}    const {P}::Params p{params};
    float acc[{max(len(learn), 1)}] = {{0.0f}};
    if (i < N) {{
        {P}::State g[{maxl}], rest[{maxl}];
#pragma unroll
        for (int l = 0; l < {maxl}; ++l) {{
            rest[l] = {P}::initial{_t(tf)}(p, l);
            g[l] = {P}::State{{}};
        }}
        for (int t = T - 1; t >= 0; --t) {{
            const long long idx = (long long)t * N + i;
            const float go = to_float(grad_out[idx]);
            float gx = 0.0f;
#pragma unroll
            for (int l = 0; l < {maxl}; ++l) {{
                if (l < levels) {{
                const long long hi = {hidx};
                {P}::State prev = rest[l];
{load}
{recompute}                const float gl = {P}::backward_step{_t(tb)}(go, g[l], to_float(h[hi]), {x_arg}, prev, p, l,
                                                          alpha, width{grad_args});
                gx = l == 0 ? gl : gx + gl;
                }}
            }}
            grad_x[idx] = from_float<scalar_t>(gx);
        }}
    }}
{reduce}}}
"""


def kernels_source() -> str:
    body = "".join(_kernels(spec) for spec in registered())
    return ("// Generated by snnexp/kernels/generate.py: the multi-step kernels of every declared neuron, one thread\n"
            "// per neuron looping over T; data [T, N] contiguous (h of a multi-level neuron [levels, T, N]). The\n"
            "// forward stores h in the storage dtype (the backward recomputes the same spikes from it) and the\n"
            "// state variables other than the membrane (float32); learnable parameters' gradients are reduced per\n"
            "// block, then atomically.\n"
            f'#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n#include "neuron_device.cuh"\n#include "{STEPS}"\n\n'
            f"namespace snn {{\n{body}\n}}  // namespace snn\n")


# ---------------------------------------------------------------------------------------------- CPU loops


def _cpu_signatures(spec: NeuronSpec, kind: str) -> tuple[str, str]:
    forward = (f"void {spec.name}_forward_{kind}(const float* x, float* out, int64_t T, int64_t N, int levels, "
               "int64_t switches, const float* params)")
    backward = (f"void {spec.name}_backward_{kind}(const float* grad_out, const float* x, float* grad_x, int64_t T, "
                "int64_t N, int levels, int64_t switches, bool detach, int sg, const float* params, float alpha, "
                "float width, double* grad_params)")
    return forward, backward


def _dispatch(spec: NeuronSpec, kind: str, inner: str, backward: bool) -> str:
    """``inner`` inside nested dispatches of the runtime switches (and detach, surrogate) to template constants."""
    lines = []
    for i, switch in enumerate(spec.switches):
        lines.append(f"dispatch_bool((switches >> {i}) & 1, [&](auto S{i}) {{")
    if backward:
        lines.append("dispatch_bool(detach, [&](auto R) {")
        lines.append(f"dispatch_int<{len(surrogates())}>(sg, [&](auto G) {{")
    consts = [f"constexpr int KIND = {spec.kinds.index(kind)};"] if len(spec.kinds) > 1 else []
    for i, switch in enumerate(spec.switches):
        value = f"decltype(S{i})::value" if spec.has_switch(switch, kind) else "false"
        consts.append(f"constexpr bool {SWITCHES[switch]} = {value};")
    if backward:
        consts += ["constexpr bool DETACH = decltype(R)::value;", "constexpr int SG = decltype(G)::value;"]
    depth = len(spec.switches) + (2 if backward else 0)
    body = "\n".join(["    " + c for c in consts] + ["    " + inner] + (["    return 0;"] if depth else []))
    if depth == 0:
        return f"{{\n{body}\n}}"
    return "\n".join(lines) + "\n" + body + "\n" + "".join("});" for _ in range(depth))


def _cpu_unit(spec: NeuronSpec, kind: str) -> str:
    P, maxl = spec.name, MAX_LEVELS if spec.levels else 1
    tf, tb = _targs(spec, False), _targs(spec, True)
    tfp, tbp = _tparams(spec, False), _tparams(spec, True)
    learn = spec.learnable
    nlearn = max(len(learn), 1)
    unpack = f"    const {P}::Params p{{" + ", ".join(f"params[{i}]" for i in range(len(spec.params))) + "};"
    save = "".join(f"                    saved_{v}[hi] = st[l][j].{v};\n" for v in spec.saved)
    saved_params = "".join(f", float* __restrict__ saved_{v}" for v in spec.saved)
    saved_args = lambda prefix: "".join(f", {prefix}{v}" for v in spec.saved)  # noqa: E731
    if spec.levels:
        write = "                    if (WRITE_OUT) total[j] = l == 0 ? s : total[j] + s;\n"
        flush = ("        if (WRITE_OUT)\n            for (int64_t j = 0; j < m; ++j) out[t * out_stride + j] = "
                 "total[j];\n")
        gx_write = "                    gx[j] = l == 0 ? gl : gx[j] + gl;\n"
        gx_flush = "            for (int64_t j = 0; j < m; ++j) grad_x[t * N + c + j] = gx[j];\n"
    else:
        write = "                    if (WRITE_OUT) out[t * out_stride + j] = s;\n"
        flush = ""
        gx_write = "                    grad_x[t * N + c + j] = gl;\n"
        gx_flush = ""
    membrane = spec.state[0]
    load = "".join(f"                    prev.{v} = buf_{v}[hi];\n" for v in spec.saved)
    if spec.reads(membrane):
        before = "".join(f"                        before.{v} = buf_{v}[hi - {'SNN_HOST_CHUNK'}];\n"
                         for v in spec.saved)
        recompute = (f"                    if (t > 0) {{\n                        {P}::State before = rest[l];\n"
                     f"{before}                        prev.{membrane} = {P}::membrane_after{_t(tf)}("
                     f"hbuf[hi - SNN_HOST_CHUNK], before, p, l);\n                    }}\n")
    else:
        recompute = ""
    grad_args = "".join(f", acc[{j}][j]" for j in range(len(learn)))
    forward_sig, backward_sig = _cpu_signatures(spec, kind)
    return f"""// Generated by snnexp/kernels/generate.py: the CPU loops of {P} ({kind}) over float32 [T, N] data, chunks of
// SNN_HOST_CHUNK neurons looping over T outside and over the chunk inside (contiguous rows, vectorised).
#include "neuron_host.cuh"
#include "{STEPS}"
#include "{CPU_DECLS}"

namespace snn {{
namespace cpu {{
namespace {{

// One chunk of m neurons over T steps: the output (WRITE_OUT, rows at t * out_stride) and/or h and the saved
// state (WRITE_H, at [(l * T + t) * SNN_HOST_CHUNK + j]).
template <{", ".join(tfp + ["bool WRITE_OUT", "bool WRITE_H"])}>
inline void forward_chunk(const float* __restrict__ x, int64_t x_stride, float* __restrict__ out,
                          int64_t out_stride, float* __restrict__ h{saved_params}, int64_t T, int64_t m, int levels,
                          const {P}::Params& p) {{
    {P}::State st[{maxl}][SNN_HOST_CHUNK];
    float total[SNN_HOST_CHUNK];
    (void)total;
    for (int l = 0; l < levels; ++l)
        for (int64_t j = 0; j < m; ++j) st[l][j] = {P}::initial{_t(tf)}(p, l);
    for (int64_t t = 0; t < T; ++t) {{
        for (int l = 0; l < levels; ++l) {{
#pragma omp simd
            for (int64_t j = 0; j < m; ++j) {{
                const int64_t hi = (l * T + t) * SNN_HOST_CHUNK + j;
                (void)hi;
                if (WRITE_H) {{
{save}                }}
                const float ht = {P}::charge{_t(tf)}(x[t * x_stride + j], st[l][j], p, l);
                const float s = {P}::fire_reset{_t(tf)}(ht, st[l][j], p, l);
                if (WRITE_H) h[hi] = ht;
{write}            }}
        }}
{flush}    }}
}}

template <{", ".join(tbp)}>
void backward_range(const float* __restrict__ grad_out, const float* __restrict__ x, float* __restrict__ grad_x,
                    int64_t T, int64_t N, int64_t begin, int64_t end, int levels, const {P}::Params& p, float alpha,
                    float width, double* total) {{
    std::vector<float> hbuf(static_cast<size_t>(levels) * T * SNN_HOST_CHUNK);
{"".join(f"    std::vector<float> buf_{v}_store(hbuf.size());{chr(10)}    float* buf_{v} = buf_{v}_store.data();{chr(10)}" for v in spec.saved)}    {P}::State g[{maxl}][SNN_HOST_CHUNK], rest[{maxl}];
    float acc[{nlearn}][SNN_HOST_CHUNK];
    float gx[SNN_HOST_CHUNK];
    (void)gx;
    for (int l = 0; l < levels; ++l) rest[l] = {P}::initial{_t(tf)}(p, l);
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {{
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        forward_chunk<{tf + ", " if tf else ""}false, true>(x + c, N, nullptr, 0, hbuf.data(){saved_args("buf_")}, T, m,
                                                        levels, p);
        for (int l = 0; l < levels; ++l)
            for (int64_t j = 0; j < m; ++j) g[l][j] = {P}::State{{}};
        for (int k = 0; k < {nlearn}; ++k)
            for (int64_t j = 0; j < m; ++j) acc[k][j] = 0.0f;
        for (int64_t t = T - 1; t >= 0; --t) {{
            for (int l = 0; l < levels; ++l) {{
#pragma omp simd
                for (int64_t j = 0; j < m; ++j) {{
                    const int64_t hi = (l * T + t) * SNN_HOST_CHUNK + j;
                    {P}::State prev = rest[l];
{load}{recompute}                    const float gl = {P}::backward_step{_t(tb)}(grad_out[t * N + c + j], g[l][j], hbuf[hi],
                                                              x[t * N + c + j], prev, p, l, alpha, width{grad_args});
{gx_write}                }}
            }}
{gx_flush}        }}
        for (int k = 0; k < {len(learn)}; ++k)
            for (int64_t j = 0; j < m; ++j) total[k] += acc[k][j];
    }}
}}

}}  // namespace

{forward_sig} {{
{unpack}
    {_dispatch(spec, kind, f'''for_each_chunk(N, [&](int64_t b, int64_t e) {{
        for (int64_t c = b; c < e; c += SNN_HOST_CHUNK)
            forward_chunk<{tf + ", " if tf else ""}true, false>(x + c, N, out + c, N, nullptr{", nullptr" * len(spec.saved)}, T,
                std::min<int64_t>(SNN_HOST_CHUNK, e - c), levels, p);
        return 0.0; }});''', False)}
}}

{backward_sig} {{
{unpack}
    {_dispatch(spec, kind, f'''const int parts = std::max<int64_t>((N + GRAIN - 1) / GRAIN, 1);
    std::vector<double> partial(static_cast<size_t>(parts) * {nlearn}, 0.0);
    for_each_chunk(N, [&](int64_t b, int64_t e) {{
        backward_range<{tb}>(grad_out, x, grad_x, T, N, b, e, levels, p, alpha, width,
                             partial.data() + (b / GRAIN) * {nlearn});
        return 0.0; }});
    for (int k = 0; k < {len(learn)}; ++k)
        for (int q = 0; q < parts; ++q) grad_params[k] += partial[q * {nlearn} + k];''', True)}
}}

}}  // namespace cpu
}}  // namespace snn
"""


def cpu_units() -> dict[str, str]:
    """file name -> source of every CPU translation unit (one per neuron kind, so that ninja builds them in
    parallel)."""
    return {f"neuron_cpu_{spec.name}_{kind}.cpp": _cpu_unit(spec, kind)
            for spec in registered() for kind in spec.kinds}


def cpu_declarations() -> str:
    decls = "".join(f"{sig};\n" for spec in registered() for kind in spec.kinds for sig in _cpu_signatures(spec, kind))
    return ("// Generated by snnexp/kernels/generate.py: the CPU entry points of every declared neuron kind.\n"
            f"#pragma once\n#include <cstdint>\n\n#define SNN_MAX_LEVELS {MAX_LEVELS}\n\nnamespace snn {{\nnamespace cpu {{\n{decls}}}  // namespace cpu\n"
            "}  // namespace snn\n")


def _binding(spec: NeuronSpec) -> str:
    P, nparams, nlearn = spec.name, len(spec.params), len(spec.learnable)
    forward_cases = "".join(
        f"        case {i}: snn::cpu::{P}_forward_{kind}(x.data_ptr<float>(), out.data_ptr<float>(), x.size(0), "
        f"x.size(1), (int)levels, switches, p); break;\n" for i, kind in enumerate(spec.kinds))
    backward_cases = "".join(
        f"        case {i}: snn::cpu::{P}_backward_{kind}(grad_out.data_ptr<float>(), x.data_ptr<float>(), "
        "grad_x.data_ptr<float>(), x.size(0), x.size(1), (int)levels, switches, detach, (int)surrogate, p, "
        f"(float)alpha, (float)width, grads.data_ptr<double>()); break;\n" for i, kind in enumerate(spec.kinds))
    return f"""
// {P}: forward -> output; backward -> (dL/dX, dL/dparams as float64 [{nlearn}])
static at::Tensor {P}_forward(at::Tensor x, int64_t kind, int64_t switches, int64_t levels,
                              std::vector<double> params) {{
    check_input(x, "x");
    check_call(params.size(), {nparams}, levels);
    float p[{max(nparams, 1)}];
    for (size_t i = 0; i < params.size(); ++i) p[i] = (float)params[i];
    auto out = BufferPool::instance().empty(x.sizes());
    switch (kind) {{
{forward_cases}        default: TORCH_CHECK(false, "{P}: unknown kind ", kind);
    }}
    return out;
}}

static std::vector<at::Tensor> {P}_backward(at::Tensor grad_out, at::Tensor x, int64_t kind, int64_t switches,
                                            bool detach, int64_t surrogate, int64_t levels,
                                            std::vector<double> params, double alpha, double width) {{
    check_input(grad_out, "grad_out");
    check_input(x, "x");
    check_call(params.size(), {nparams}, levels);
    float p[{max(nparams, 1)}];
    for (size_t i = 0; i < params.size(); ++i) p[i] = (float)params[i];
    auto grad_x = BufferPool::instance().empty(x.sizes());
    auto grads = at::zeros({{{nlearn}}}, at::kDouble);
    switch (kind) {{
{backward_cases}        default: TORCH_CHECK(false, "{P}: unknown kind ", kind);
    }}
    return {{grad_x, grads}};
}}
"""


def bindings_source() -> str:
    specs = registered()
    defs = "".join(
        f'    m.def("{s.name}_forward", &{s.name}_forward, "{s.name} forward: the output");\n'
        f'    m.def("{s.name}_backward", &{s.name}_backward, "{s.name} backward: (dL/dX, dL/dparams)");\n'
        for s in specs)
    return ("// Generated by snnexp/kernels/generate.py: tensor entry points of every declared neuron (included by\n"
            "// neuron_cpu.cpp, which provides BufferPool, check_input and check_call).\n"
            + "".join(_binding(s) for s in specs)
            + f"\nstatic void bind_neurons(pybind11::module& m) {{\n{defs}}}\n")


def generated() -> dict[str, str]:
    """Every generated file: name -> text."""
    return {STEPS: steps_source(), KERNELS: kernels_source(), CPU_DECLS: cpu_declarations(),
            BINDINGS: bindings_source(), **cpu_units()}
