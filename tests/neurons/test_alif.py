"""The adaptive LIF (snnexp/neurons/alif.py), a neuron declared once: its fused CPU path equals its torch reference
(spikes exactly, gradients of the input and of the learnt beta), every declaration's partial derivatives are the
derivatives of its dynamics (float64 autograd), its generated CUDA kernels compile with NVRTC, and its yaml builds
it."""

from __future__ import annotations

import itertools

import pytest
import torch

from helpers.markers import needs_cupy, needs_host_build
from snnexp.kernels import expr
from snnexp.kernels.spec import registered
from snnexp.kernels.variants import spec_variants
from snnexp.neurons import functional as F
from snnexp.neurons.alif import ALIF, DECLARATION
from snnexp.neurons.surrogate import ATan, Dspike, Rectangle, Sigmoid


def _run(make, x, grad):
    outs = []
    for backend in ("torch", "auto"):
        neuron = make(backend)
        xi = x.clone().requires_grad_()
        s = neuron(xi)
        s.backward(grad)
        outs.append((s.detach(), xi.grad, [p.grad for p in neuron.parameters()], type(s.grad_fn).__name__))
    return outs


@needs_host_build
@pytest.mark.parametrize("make", [
    lambda b: ALIF(backend=b),
    lambda b: ALIF(tau=3.0, beta=0.5, rho=0.8, surrogate=ATan(), backend=b),
    lambda b: ALIF(beta=0.3, detach_reset=True, surrogate=Dspike(alpha=2.0, width=0.8), backend=b),
    lambda b: ALIF(learn_beta=False, surrogate=Rectangle(alpha=0.7), backend=b),
], ids=["default", "atan", "detach-dspike", "fixed-beta-rectangle"])
def test_fused_cpu_alif_equals_its_torch_reference(make):
    torch.manual_seed(0)
    x = torch.randn(9, 3, 301) * 1.5 + 0.7
    grad = torch.randn_like(x)
    (s_ref, gx_ref, gp_ref, ref_fn), (s, gx, gp, fused_fn) = _run(make, x, grad)
    assert ref_fn == "StackBackward0" and fused_fn.startswith("FusedCpuALIF")
    assert torch.equal(s, s_ref) and 0 < float(s.mean()) < 0.5
    assert float((gx - gx_ref).abs().max() / gx_ref.abs().max()) < 1e-5
    for a, b in zip(gp, gp_ref):  # beta
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_alif_threshold_adapts():
    """A constant drive: the adaptation raises the threshold, so ALIF fires less often than with beta = 0."""
    x = torch.full((40, 1, 1), 1.5)
    plain = ALIF(beta=0.0, backend="torch")(x).sum()
    adaptive = ALIF(beta=0.5, backend="torch")(x).sum()
    assert 0 < adaptive < plain


def _partials_agree(spec, kind, switches, surrogate, g):
    """Each declared partial equals float64 autograd of the declared charge / fire / spike / reset."""
    f64 = lambda: torch.randn((), generator=g, dtype=torch.float64).abs() * 0.5 + 0.2  # noqa: E731
    env = {"kind": kind, **switches, "level": 2.0}
    learn = {p.name for p in spec.learnable if p.learnable is True or expr.evaluate(p.learnable, env)}
    leaves = {"x": f64()} | {v: f64() for v in spec.state} | {p.name: f64() for p in spec.params}
    leaves = {n: t.requires_grad_() for n, t in leaves.items()}
    scope = {**env, **leaves}
    for name, text in spec.lets.items():
        scope[name] = expr.evaluate(text, scope)
    wrt = ["x", *spec.state, *learn]

    def compare(value, table, names, extra):
        grads = torch.autograd.grad(value, [leaves[n] for n in names], allow_unused=True, retain_graph=True)
        for n, got in zip(names, grads):
            declared = table.get(n, "0.0")
            want = expr.evaluate(declared, {**{k: v.detach() if torch.is_tensor(v) else v for k, v in scope.items()},
                                            **extra})
            got = torch.zeros((), dtype=torch.float64) if got is None else got
            torch.testing.assert_close(got, torch.as_tensor(want, dtype=torch.float64), msg=f"{spec.name} d/d{n}")

    h = expr.evaluate(spec.charge, scope)
    compare(h, spec.dh, wrt, {})
    leaves["h"] = (h.detach() + 0.3).requires_grad_()  # near the threshold: a nonzero surrogate
    scope["h"] = leaves["h"]
    u = expr.evaluate(spec.fire, scope)
    s = expr.evaluate(spec.spike, {**scope, "u": u}, {"heaviside": lambda v: F.spike(v, surrogate)})
    sg = surrogate.derivative(u.detach())
    compare(s, spec.ds, ["h", *spec.state, *learn], {"sg": sg, "u": u.detach(), "h": leaves["h"].detach()})
    leaves["s"] = s.detach().requires_grad_()
    for var in spec.state:
        update = expr.evaluate(spec.reset[var], {**scope, "s": leaves["s"]})
        compare(update, spec.dreset.get(var, {}), ["h", "s", *spec.state, *learn],
                {"s": leaves["s"].detach(), "h": leaves["h"].detach()})


@pytest.mark.parametrize("spec", registered(), ids=lambda s: s.name)
def test_every_declared_partial_is_the_derivative_of_the_declared_dynamics(spec):
    g = torch.Generator().manual_seed(0)
    for kind in spec.kinds:
        for values in itertools.product((False, True), repeat=len(spec.switches)):
            switches = {**spec.fixed, **dict(zip(spec.switches, values))}
            switches = {s: switches.get(s, False) for s in ("hard_reset", "decay_input")}
            _partials_agree(spec, kind, switches, Sigmoid(alpha=2.0), g)


@needs_cupy
def test_alif_cuda_kernels_compile_with_nvrtc():
    from cupy_backends.cuda.libs import nvrtc

    from snnexp.kernels import sources
    from snnexp.kernels.variants import nvrtc_options

    variants = [v for v in spec_variants(DECLARATION, (torch.float32, torch.float16))]
    prog = nvrtc.createProgram(sources.kernel_source(), "neuron_kernels.cu", [], [])
    try:
        names = list(dict.fromkeys(n for v in variants for n in v.name_expressions))
        for name in names:
            nvrtc.addNameExpression(prog, name)
        nvrtc.compileProgram(prog, list(nvrtc_options("compute_90", sources.cuda_include_dirs())))
        ptx = nvrtc.getPTX(prog)
        ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
        assert all(f".entry {nvrtc.getLoweredName(prog, n)}(" in ptx for n in names)
    finally:
        nvrtc.destroyProgram(prog)
    assert len(variants) == 2 * 2 * 5 and "alif_backward" in names[1]


def test_neuron_yaml_builds_alif_and_its_schema_takes_its_keys():
    """conf/neuron/alif.yaml: its keys are ALIF's arguments (the schema snnexp.config derives from the constructor,
    registered for every yaml of conf/neuron/ without any other edit), and it builds an ALIF."""
    import hydra
    import yaml
    from helpers.runs import REPO

    from snnexp.config import schema_for

    node = yaml.safe_load((REPO / "conf" / "neuron" / "alif.yaml").read_text())
    assert "/schema/neuron/alif@_here_" in node["defaults"]
    fields = set(schema_for(node["_target_"], (), True).__dataclass_fields__)
    keys = {k for k in node if k != "defaults"}
    assert keys <= fields and {"tau", "beta", "rho", "learn_beta", "surrogate"} <= fields
    config = {k: node[k] for k in keys} | {"surrogate": {"_target_": "snnexp.neurons.surrogate.Sigmoid"}}
    neuron = hydra.utils.instantiate(config)()
    assert isinstance(neuron, ALIF) and neuron.beta.item() == pytest.approx(0.2)
