"""Where one CPU training step of ``benchmarks/step_cpu.py`` spends its time, and two layout questions.

    python benchmarks/step_profile.py [--model resnet19] [--entry snnexp] [--threads 2] [--steps 1] [--top 15]
                                      [--no-profile] [--no-layout] [--conv-formats] [--conv-reps 3]

Profile (torch.profiler, CPU, ``record_shapes``): one warm-up step, then ``--steps`` profiled steps. Prints the top
ops by self CPU time (grouped by op), then the shares of the step's self time by what the op belongs to, found by
its enclosing op: convolution (torch's, or snnexp's ``Winograd3x3`` and ``Conv3x3Stride2``) / batch norm / linear /
loss forward and backward, the neuron (snnexp's fused CPU op, labelled ``snnexp::neuron_forward`` /
``snnexp::neuron_backward`` here; the whole ``FusedCpuNeuronBackward`` node counts as the neuron), the optimiser
(``Optimizer.step`` / ``zero_grad``), gradient accumulation, and the rest by the op's own name. Copies (copy_,
contiguous, clone, cat, stack, repeat, permute...) and allocations (empty*, zeros...) are also totalled wherever
they occur, with the largest copies by shape and enclosing op. Page faults of fresh allocations are paid inside
whichever op first writes the memory, so they hide in those ops.

Layout (``--no-layout`` skips): forward hooks record, for every ``SeqToBatch`` (the [T, B] <-> [T*B] fold) and
every neuron, whether its input is contiguous and whether folding it is a view; and whether the stem's output
is the same at every time step (direct encoding of a static image).

Formats (``--conv-formats``): the ResNet-19 convolutions at T*B = 64, forward + backward, in NCHW and in
channels_last, each shape timed alone and totalled with its multiplicity in the network.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

COPY_OPS = ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat", "aten::stack", "aten::repeat",
            "aten::permute", "aten::_to_copy", "aten::to", "aten::reshape", "aten::expand", "aten::transpose",
            "aten::index", "aten::flip")
ALLOC_OPS = ("aten::empty", "aten::empty_like", "aten::empty_strided", "aten::zeros", "aten::zeros_like",
             "aten::zero_", "aten::resize_", "aten::new_empty", "aten::new_zeros", "aten::full", "aten::ones_like",
             "aten::full_like", "aten::fill_")
# enclosing-op substrings -> category (the outermost enclosing match decides)
ENCLOSING = (
    (("Optimizer.step", "Optimizer.zero_grad"), "optimizer"),
    (("snnexp::neuron", "FusedCpuNeuron"), "neuron"),
    (("aten::convolution", "ConvolutionBackward", "aten::convolution_backward", "Winograd3x3", "Conv3x3Stride2"),
     "convolution"),
    (("aten::batch_norm", "NativeBatchNormBackward", "aten::native_batch_norm_backward"), "batch norm"),
    (("aten::linear", "AddmmBackward", "MmBackward", "aten::addmm"), "linear"),
    (("aten::cross_entropy", "NllLoss", "LogSoftmax", "aten::log_softmax", "aten::nll_loss"), "loss"),
    (("AccumulateGrad",), "gradient accumulation"),
    (("aten::adaptive_avg_pool2d", "aten::mean", "MeanBackward", "AdaptiveAvgPool2DBackward"), "pooling / mean"),
    (("AddBackward", "aten::add"), "residual add"),
)


def label_snnexp_neuron():
    """Make the fused CPU neuron's extension calls show in the profile as ``snnexp::neuron_forward`` /
    ``snnexp::neuron_backward`` (they are not dispatcher ops, so the profiler would not see them): every generated
    entry point (``<neuron>_forward`` / ``<neuron>_backward``) of the loaded extension is wrapped in place."""
    import functools

    import torch

    from snnexp.kernels import cpu

    ext = cpu.extension()

    def labelled(label, fn):
        @functools.wraps(fn)
        def call(*args):
            with torch.profiler.record_function(label):
                return fn(*args)
        return call

    for name in dir(ext):
        for kind in ("forward", "backward"):
            if name.endswith(f"_{kind}"):
                setattr(ext, name, labelled(f"snnexp::neuron_{kind}", getattr(ext, name)))


def categorize(event) -> str:
    """The category of one profiled op: its outermost enclosing op that names one, else its own name."""
    chain, e = [], event
    while e is not None:
        chain.append(e.name)
        e = e.cpu_parent
    backward = any("autograd::engine" in n or "Backward" in n for n in chain)
    for name in reversed(chain):  # outermost first
        for keys, category in ENCLOSING:
            if any(k in name for k in keys):
                if category in ("optimizer", "gradient accumulation"):
                    return category
                return f"{category} {'bwd' if backward else 'fwd'}"
    own = event.name
    if own in COPY_OPS:
        return f"copies / layout {'bwd' if backward else 'fwd'}"
    if own in ALLOC_OPS:
        return "allocation"
    return f"other {'bwd' if backward else 'fwd'} ({own})"


def profile(args) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    from step_cpu import SIZES, make_step

    torch.set_num_threads(args.threads)
    if args.entry == "snnexp":
        label_snnexp_neuron()
    T, batch = SIZES[args.model]
    step, info = make_step(args.model, args.entry, T, batch)
    step()  # warm-up
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            with record_function("training_step"):
                step()
    wall = (time.perf_counter() - t0) / args.steps
    print(f"\n{args.entry} {args.model} (T={T}, B={batch}), {args.threads} threads: {wall * 1e3:.0f} ms per profiled "
          f"step (profiler on), {args.steps} step(s)\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=48))

    events = [e for e in prof.events() if e.device_type.name == "CPU" and e.name != "training_step"]
    total = sum(e.self_cpu_time_total for e in events)
    by_cat = collections.Counter()
    for e in events:
        by_cat[categorize(e)] += e.self_cpu_time_total
    print(f"Shares of the step's self CPU time ({total / 1e3 / args.steps:.0f} ms per step), by enclosing op:")
    folded = collections.Counter()
    for cat, us in by_cat.items():
        folded[cat.split(" (")[0] if cat.startswith("other") else cat] += us
    for cat, us in folded.most_common():
        print(f"  {cat:<34} {100 * us / total:5.1f}%  {us / 1e3 / args.steps:8.0f} ms")
    others = [(c, us) for c, us in by_cat.most_common() if c.startswith("other")][:8]
    if others:
        print("  'other' by op: " + ", ".join(f"{c.split('(')[1][:-1]} {100 * us / total:.1f}%" for c, us in others))

    copies = [e for e in events if e.name in COPY_OPS]
    allocs = [e for e in events if e.name in ALLOC_OPS]
    share = lambda evs: 100 * sum(e.self_cpu_time_total for e in evs) / total  # noqa: E731
    print(f"\nCopy / layout ops wherever they occur: {share(copies):.1f}% (aten::copy_ alone "
          f"{share(e for e in copies if e.name == 'aten::copy_'):.1f}%); allocation ops: {share(allocs):.1f}%")
    where = collections.Counter()
    for e in copies:
        if e.self_cpu_time_total <= 0:
            continue
        parent = e.cpu_parent
        while parent is not None and parent.name in COPY_OPS:
            parent = parent.cpu_parent
        shapes = e.input_shapes[0] if e.input_shapes else []
        where[(e.name, str(shapes), parent.name if parent else "-")] += e.self_cpu_time_total
    print("Largest copies (op, first input shape, enclosing op): share of the step")
    for (name, shape, parent), us in where.most_common(10):
        print(f"  {100 * us / total:5.1f}%  {name} {shape} in {parent}")


def layout(args) -> None:
    import torch

    from snnexp.models.layers import SeqToBatch
    from snnexp.neurons import MultiStepNeuron
    from step_cpu import SIZES
    import sj_twins

    T, batch = SIZES[args.model]
    module, _ = sj_twins.snnexp_module(args.model, T)
    spec = sj_twins.MODELS[args.model]
    seen = collections.Counter()
    stem_out = {}

    def fold_hook(mod, inputs):
        x = inputs[0]
        folded = x.flatten(0, 1)
        view = folded.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        seen[("SeqToBatch", x.is_contiguous(), view)] += 1

    def neuron_hook(mod, inputs):
        seen[("neuron", inputs[0].is_contiguous(), None)] += 1

    handles = []
    for m in module.model.modules():
        if isinstance(m, SeqToBatch):
            handles.append(m.register_forward_pre_hook(fold_hook))
        elif isinstance(m, MultiStepNeuron):
            handles.append(m.register_forward_pre_hook(neuron_hook))
    stem = getattr(module.model, "stem", None)
    if stem is not None:
        handles.append(stem[0].register_forward_hook(lambda m, i, o: stem_out.setdefault("x", o)))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *spec["input"], generator=gen) if spec["static"] else \
        torch.rand(T, batch, *spec["input"], generator=gen)
    encoded = module.encode(x)
    module(x)
    for h in handles:
        h.remove()
    print(f"\nLayout ({args.model}, snnexp): encoded input {tuple(encoded.shape)} strides {encoded.stride()} "
          f"contiguous={encoded.is_contiguous()}")
    for (kind, contiguous, view), n in sorted(seen.items(), key=str):
        extra = "" if view is None else f", folding [T, B] -> [T*B] is {'a view' if view else 'a COPY'}"
        print(f"  {n:3d} x {kind}: input contiguous={contiguous}{extra}")
    if "x" in stem_out:
        out = stem_out["x"].detach()
        same = all(torch.equal(out[0], out[t]) for t in range(1, out.shape[0]))
        print(f"  stem conv+BN output {tuple(out.shape)}: identical at every time step: {same}")


# (in, out, kernel, stride, input size, how many in ResNet-19)
RESNET19_CONVS = (
    (3, 64, 3, 1, 32, 1), (64, 128, 3, 1, 32, 1), (64, 128, 1, 1, 32, 1), (128, 128, 3, 1, 32, 5),
    (128, 256, 3, 2, 32, 1), (128, 256, 1, 2, 32, 1), (256, 256, 3, 1, 16, 5),
    (256, 512, 3, 2, 16, 1), (256, 512, 1, 2, 16, 1), (512, 512, 3, 1, 8, 3),
)


def conv_formats(args) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    n = args.conv_batch
    print(f"\nConv2d forward+backward at ResNet-19's shapes, N = T*B = {n}, {args.threads} threads, "
          f"median of {args.conv_reps} (after one warm-up)\n")
    print("| conv | count | NCHW ms | channels_last ms | NCHW / channels_last |")
    print("|---|---|---|---|---|")
    totals = {"nchw": 0.0, "cl": 0.0}
    gen = torch.Generator().manual_seed(0)
    for cin, cout, k, s, hw, count in RESNET19_CONVS:
        base_x = torch.randn(n, cin, hw, hw, generator=gen)
        base_w = torch.randn(cout, cin, k, k, generator=gen) * 0.05
        out_hw = (hw + 2 * (k // 2) - k) // s + 1
        grad = torch.randn(n, cout, out_hw, out_hw, generator=gen)
        ms = {}
        for fmt, mf in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
            x = base_x.contiguous(memory_format=mf).requires_grad_(cin != 3)
            w = base_w.contiguous(memory_format=mf).requires_grad_()
            g = grad.contiguous(memory_format=mf)
            times = []
            for i in range(args.conv_reps + 1):
                t0 = time.perf_counter()
                y = F.conv2d(x, w, None, s, k // 2)
                y.backward(g)
                dt = time.perf_counter() - t0
                x.grad = w.grad = None
                if i:
                    times.append(dt)
            ms[fmt] = 1e3 * statistics.median(times)
            totals[fmt] += count * ms[fmt]
        print(f"| {cin}->{cout} k{k} s{s} @{hw}x{hw} | {count} | {ms['nchw']:.0f} | {ms['cl']:.0f} | "
              f"{ms['nchw'] / ms['cl']:.2f} |")
    print(f"| all convs, weighted by count | | {totals['nchw']:.0f} | {totals['cl']:.0f} | "
          f"{totals['nchw'] / totals['cl']:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet19", choices=("resnet19", "vggsnn"))
    parser.add_argument("--entry", default="snnexp", choices=("snnexp", "SpikingJelly 2.0"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-layout", action="store_true")
    parser.add_argument("--conv-formats", action="store_true")
    parser.add_argument("--conv-reps", type=int, default=3)
    parser.add_argument("--conv-batch", type=int, default=64, help="N of the conv timings (T*B)")
    args = parser.parse_args(argv)
    if not args.no_layout:
        layout(args)
    if not args.no_profile:
        profile(args)
    if args.conv_formats:
        conv_formats(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
