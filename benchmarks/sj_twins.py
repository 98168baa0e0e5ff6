"""The benchmarked models two ways: as ``python -m snnexp`` builds them, and their twins from SpikingJelly 2.0 layers.

Used by ``benchmarks/step_cpu.py`` and ``benchmarks/memory.py``.

snnexp side: :func:`snnexp_module` composes the config of ``python -m snnexp model=<name> neuron=tet_lif data=...
T=...`` (``snnexp.compose``) and builds it with snnexp's own builder (``snnexp.build``, i.e. ``snnexp.train.build``):
the model with its BN warm-start hooks, inside the ``SNNModule`` whose ``forward`` encodes a static batch
``[B, C, H, W]`` into ``[T, B, C, H, W]`` (direct encoding, ``encoder=direct``) as training does. Event frames
``[T, B, P, H, W]`` pass through unchanged.

SpikingJelly side: :func:`sj_twin` rebuilds the same layout from ``spikingjelly.activation_based`` layers
(``layer.Conv2d`` / ``BatchNorm2d`` / ``AdaptiveAvgPool2d`` / ``Flatten`` / ``Linear``, ``neuron.LIFNode``), all in
multi-step mode (``functional.set_step_mode(net, "m")``), with the neuron's tau / threshold / reset / surrogate /
``detach_reset`` / ``decay_input`` read off snnexp's neuron. Modules are created in the order snnexp creates
them, so the two state dicts line up entry by entry: :func:`copy_weights` loads snnexp's weights into the twin
(shapes checked), after which both compute the same function (:func:`check_same_function`). Static images are
repeated over T as SpikingJelly's examples do (``x.unsqueeze(0).repeat(T, 1, 1, 1, 1)``).

``python benchmarks/sj_twins.py`` builds both of each model, copies the weights and prints how far their logits and
gradients differ (0 when the layouts and neurons agree).
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

# model name -> (snnexp overrides besides model/neuron/T, static input shape or None for event frames, classes)
MODELS = {
    "resnet19": {"data": "cifar10", "input": (3, 32, 32), "static": True, "classes": 10},
    "vggsnn": {"data": "cifar10dvs", "input": (2, 48, 48), "static": False, "classes": 10},
}
NEURON = "tet_lif"  # TET's neuron: LIF tau 2, decay_input false, hard reset to 0, triangle surrogate


def snnexp_module(model: str, T: int, overrides=()):
    """``(module, neuron)``: snnexp's ``SNNModule`` for ``python -m snnexp model=<model> neuron=tet_lif
    data=<its data> T=<T> <overrides>`` and the neuron factory of its config (what the model's spiking layers were
    built with)."""
    from hydra.utils import instantiate

    import snnexp

    spec = MODELS[model]
    overrides = [f"model={model}", f"neuron={NEURON}", f"data={spec['data']}", f"T={T}", *overrides]
    if spec["data"] == "cifar10dvs":
        overrides.append("data.size=48")
    cfg = snnexp.compose(overrides, output_dir=tempfile.mkdtemp(prefix="snnexp_bench_"))
    _, module = snnexp.build(cfg)
    if tuple(module.input_shape) != spec["input"] or module.model.num_classes != spec["classes"]:
        raise RuntimeError(f"{model}: snnexp built input {module.input_shape}, {module.model.num_classes} classes")
    return module, instantiate(cfg.neuron)


def sj_neuron_factory(snnexp_neuron):
    """A function building SpikingJelly ``LIFNode``s equal to the neurons ``snnexp_neuron()`` builds."""
    from spikingjelly.activation_based import neuron, surrogate

    from snnexp.neurons import LIF

    probe = snnexp_neuron()
    if type(probe) is not LIF:
        raise ValueError(f"no SpikingJelly twin for {type(probe).__name__}")
    sg = probe.surrogate
    if sg.name == "triangle":  # (1/g^2) max(0, g - |x|) == SJ's -a^2 |x| + a on |x| <= 1/a with a = 1/g
        make_sg = lambda: surrogate.PiecewiseQuadratic(alpha=1.0 / sg.alpha)  # noqa: E731
    elif sg.name == "sigmoid":
        make_sg = lambda: surrogate.Sigmoid(alpha=sg.alpha)  # noqa: E731
    elif sg.name == "atan":
        make_sg = lambda: surrogate.ATan(alpha=sg.alpha)  # noqa: E731
    else:
        raise ValueError(f"no SpikingJelly twin for the {sg.name} surrogate")

    def make():
        return neuron.LIFNode(tau=float(probe.tau), decay_input=probe.decay_input, v_threshold=float(probe.v_threshold),
                              v_reset=probe.v_reset, surrogate_function=make_sg(), detach_reset=probe.detach_reset,
                              step_mode="m")

    make.description = (f"LIFNode(tau={probe.tau}, decay_input={probe.decay_input}, v_threshold={probe.v_threshold}, "
                        f"v_reset={probe.v_reset}, detach_reset={probe.detach_reset}, surrogate={sg.name} "
                        f"alpha={sg.alpha})")
    return make


def _conv_bn(cin: int, cout: int, k: int, stride: int, bias: bool = False) -> nn.Sequential:
    from spikingjelly.activation_based import layer

    return nn.Sequential(layer.Conv2d(cin, cout, k, stride, k // 2, bias=bias), layer.BatchNorm2d(cout))


class SJBasicBlock(nn.Module):
    """sn2(BN(conv(sn1(BN(conv(x))))) + shortcut(x)), shortcut a 1x1 conv + BN where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, make_neuron):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.sn1 = make_neuron()
        self.conv2 = _conv_bn(cout, cout, 3, 1)
        self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        self.sn2 = make_neuron()

    def forward(self, x):
        return self.sn2(self.conv2(self.sn1(self.conv1(x))) + self.shortcut(x))


class SJResNet19(nn.Module):
    """TET's ResNet-19 at CIFAR size: conv3x3 64 - BN - LIF, BasicBlocks 3x128, 3x256 (/2), 2x512 (/2), global
    average pool, fc 512->256 - LIF, fc 256->classes; input and output ``[T, B, ...]``."""

    def __init__(self, make_neuron, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        from spikingjelly.activation_based import layer

        self.stem = nn.Sequential(_conv_bn(in_channels, 64, 3, 1), make_neuron())
        blocks, cin = [], 64
        for n, width, stride in ((3, 128, 1), (3, 256, 2), (2, 512, 2)):
            for j in range(n):
                blocks.append(SJBasicBlock(cin, width, stride if j == 0 else 1, make_neuron))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = layer.AdaptiveAvgPool2d(1)
        self.flatten = layer.Flatten()
        self.head = nn.Sequential(layer.Linear(512, 256), make_neuron())
        self.classifier = layer.Linear(256, num_classes)

    def forward(self, x):
        return self.classifier(self.head(self.flatten(self.pool(self.blocks(self.stem(x))))))


class SJVGGSNN(nn.Module):
    """TET's VGGSNN (stride-2 variant): 8 x [conv3x3 (bias) - BN - LIF] at 64, 128, 256, 256, 512 x 4 channels,
    stride 2 in layers 2/4/6/8, then Linear(512*h*w -> classes) per step."""

    def __init__(self, make_neuron, in_channels: int = 2, size: int = 48, num_classes: int = 10):
        super().__init__()
        from spikingjelly.activation_based import layer

        layers, cin, h = [], in_channels, size
        for i, cout in enumerate((64, 128, 256, 256, 512, 512, 512, 512), start=1):
            stride = 2 if i % 2 == 0 else 1
            layers.append(nn.Sequential(_conv_bn(cin, cout, 3, stride, bias=True), make_neuron()))
            cin, h = cout, (h + 1) // 2 if stride == 2 else h
        self.features = nn.Sequential(*layers)
        self.flatten = layer.Flatten()
        self.classifier = layer.Linear(cin * h * h, num_classes)
        for m in self.modules():  # TET's initialisation, as snnexp's
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def sj_twin(model: str, snnexp_neuron) -> nn.Module:
    """The SpikingJelly twin of snnexp's ``model`` (multi-step mode), with neurons equal to ``snnexp_neuron()``'s."""
    from spikingjelly.activation_based import functional

    spec = MODELS[model]
    make = sj_neuron_factory(snnexp_neuron)
    if model == "resnet19":
        net = SJResNet19(make, spec["input"][0], spec["classes"])
    elif model == "vggsnn":
        net = SJVGGSNN(make, spec["input"][0], spec["input"][1], spec["classes"])
    else:
        raise ValueError(model)
    functional.set_step_mode(net, "m")
    return net


def sj_encode(x: torch.Tensor, T: int) -> torch.Tensor:
    """SpikingJelly's examples' direct encoding: the static batch repeated T times (a copy)."""
    return x.unsqueeze(0).repeat(T, *[1] * x.dim())


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s state (parameters and BN buffers, in creation order) into ``dst``; the layouts must match."""
    a, b = src.state_dict(), dst.state_dict()
    if len(a) != len(b):
        raise RuntimeError(f"state dicts differ in length: {len(a)} vs {len(b)}")
    out = {}
    for (ka, va), (kb, vb) in zip(a.items(), b.items()):
        if va.shape != vb.shape or ka.rsplit(".", 1)[-1] != kb.rsplit(".", 1)[-1]:
            raise RuntimeError(f"layouts differ: {ka} {tuple(va.shape)} vs {kb} {tuple(vb.shape)}")
        out[kb] = va.clone()
    dst.load_state_dict(out)


def check_same_function(model: str, T: int, batch: int = 2) -> tuple[float, float]:
    """Build both, copy snnexp's weights into the twin and return the largest absolute difference of their logits
    and the largest difference of their parameter gradients, relative to the largest gradient entry (train mode,
    so BN uses batch statistics; loss: the sum of the logits), on one random batch; raises if the parameter counts
    differ. snnexp convolves with torch here (``winograd=false``), as the twin does: Winograd's rounding differs
    from torch's by about 1e-5, enough to flip a spike whose membrane lies that close to the threshold, and over
    layers and time steps one flip leads to others, which would hide a difference in the networks themselves."""
    from spikingjelly.activation_based import functional

    module, neuron = snnexp_module(model, T, ["winograd=false"])
    twin = sj_twin(model, neuron)
    n_snn, n_sj = parameter_count(module.model), parameter_count(twin)
    if n_snn != n_sj:
        raise RuntimeError(f"{model}: {n_snn} parameters in snnexp's, {n_sj} in the SpikingJelly twin")
    copy_weights(module.model, twin)
    spec = MODELS[model]
    gen = torch.Generator().manual_seed(0)
    if spec["static"]:
        x = torch.rand(batch, *spec["input"], generator=gen)
        a, b = module(x).logits, twin(sj_encode(x, T))
    else:
        x = torch.rand(T, batch, *spec["input"], generator=gen)
        a, b = module(x).logits, twin(x)
    a.sum().backward()
    b.sum().backward()
    functional.reset_net(twin)
    # relative to the largest gradient entry of the model: conv biases before a BN have gradients that are 0 up to
    # rounding, so a per-tensor relative difference would be noise
    scale = max(float(q.grad.abs().max()) for q in twin.parameters())
    grad = max(float((p.grad - q.grad).abs().max()) for p, q in zip(module.model.parameters(), twin.parameters()))
    grad /= max(scale, 1e-30)
    return float((a - b).detach().abs().max()), grad


if __name__ == "__main__":  # python benchmarks/sj_twins.py: the twins' parameter counts and agreement
    for name, steps in (("resnet19", 4), ("vggsnn", 10)):
        logits, grads = check_same_function(name, steps)
        print(f"{name} T={steps}: snnexp and SpikingJelly twin with snnexp's weights: max |logits difference| "
              f"{logits:.3g}, max gradient difference {grads:.3g} (relative to the largest gradient)")
