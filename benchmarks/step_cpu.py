"""CPU time of one training step (forward, loss, backward, SGD step): snnexp vs the same network from SpikingJelly 2.0.

    python benchmarks/step_cpu.py [--threads 2] [--steps 10] [--warmup 2] [--models resnet19 vggsnn]
                                  [--allocator glibc|tuned] [--entries ENTRY ...]

Models (``benchmarks/sj_twins.py`` builds both sides):

* ``resnet19``: TET's ResNet-19, T=4, batch 16 of 3x32x32 static images, 10 classes. snnexp encodes the images
  into ``[T, B, ...]`` inside its LightningModule (direct encoding, an expand); the SpikingJelly side repeats them
  T times (its examples' ``x.unsqueeze(0).repeat(T, ...)``).
* ``vggsnn``: TET's VGGSNN (stride-2 convolutions), T=10, batch 16 of 2x48x48 event frames ``[T, B, 2, 48, 48]``.

Entries:

* ``snnexp``: ``python -m snnexp model=<model> neuron=tet_lif`` built by snnexp's own builder (``snnexp.build``:
  the model, its BN warm-start hooks, the ``SNNModule`` that encodes); the step is ``module(x)`` and the method's
  loss (the default method, ``sdt``: cross-entropy of the logits averaged over T), inside
  ``module.spike_packing.saving()`` as ``training_step`` runs it (``pack_spikes`` and ``recompute_bn`` on, the
  defaults). The neuron is snnexp's default CPU path (``backend=auto``: the fused C++ extension); the 3x3
  convolutions run by Winograd (``winograd: true``, the default; ``snnexp.kernels.winograd``): F(4x4, 3x3) for
  stride 1, the polyphase F(3x3, 2x2) for stride 2 where the output is whole 3x3 tiles (VGGSNN's); the other
  stride-2 ones by im2col matrix products (the backward of ResNet-19's 3x3 ones, both passes of its 1x1 shortcuts;
  ``im2col_backward: true``, the default; ``snnexp.kernels.strided_conv``).
* ``snnexp (torch convolutions)``: the same with ``winograd=false im2col_backward=false``: every convolution by
  torch (oneDNN), as in SpikingJelly.
* ``snnexp (plain saving)``: the same with ``pack_spikes=false recompute_bn=false``: the saved spikes kept as
  float32 and the neurons' saved inputs kept rather than recomputed (what each op saves, as in SpikingJelly).
* ``snnexp (torch's allocator)``: the same with ``cache_cpu_tensors=false``: torch's own large tensors (BN
  outputs, oneDNN's convolution outputs and input gradients) come from glibc, a fresh, page-faulting mapping each,
  instead of snnexp's buffer cache (``snnexp.kernels.cpu.cache_torch_tensors``).
* ``snnexp (reuse heap)``: ``reuse_heap=true cache_cpu_tensors=false``: glibc keeps freed blocks up to 1 GiB in
  the heap for reuse (``snnexp.kernels.heap``) instead of a fresh mapping per large tensor; the step's peak memory
  is higher (the heap fragments), which is why it is not the default.
* ``snnexp (recompute conv)``: ``recompute_conv=all``: every convolution's output that BN saves is recomputed in
  the backward from its input (spikes kept as bits) instead of kept (the default recomputes only the cheap ones: the
  encoding layer, 1x1 shortcuts): one convolution forward more per layer, for the smallest peak memory.
* ``SpikingJelly 2.0``: the same layout from ``spikingjelly.activation_based`` layers in multi-step mode,
  ``neuron.LIFNode`` with the snnexp neuron's tau / threshold / reset / surrogate / detach_reset / decay_input
  (PiecewiseQuadratic(1/g) is snnexp's Triangle(g)), the same loss, ``functional.reset_net`` after each step.

Both: ``torch.optim.SGD(lr=0.01, momentum=0.9)``, ``zero_grad(set_to_none=True)``. The parameter counts of the two
are checked equal (and printed). Each entry runs in its own process; after ``--warmup`` steps, ``--steps``
steps are timed one by one, the processes of a model taking turns step by step (a slow spell of a shared machine
hits every entry alike): the table gives their median and min, and the ratio SpikingJelly / entry by median
(above 1: faster than SpikingJelly). ``--allocator tuned`` raises glibc's ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` to 1 GiB for every entry, SpikingJelly included (heap reuse instead of a fresh,
page-faulting mmap per large activation; snnexp's ``reuse_heap`` then leaves the user's setting as it is).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

TORCH_CONV = "snnexp (torch convolutions)"  # every convolution by torch (oneDNN), as SpikingJelly's
PLAIN = "snnexp (plain saving)"  # pack_spikes=false recompute_bn=false: autograd keeps what each op saves
NO_CACHE = "snnexp (torch's allocator)"  # cache_cpu_tensors=false: torch's large tensors from glibc, page-faulting
REUSE_HEAP = "snnexp (reuse heap)"  # reuse_heap=true: glibc keeps freed large blocks for reuse (more memory)
RECOMPUTE_CONV = "snnexp (recompute conv)"  # recompute_conv=all: all conv outputs recomputed in the backward
ENTRIES = ("snnexp", TORCH_CONV, PLAIN, NO_CACHE, REUSE_HEAP, RECOMPUTE_CONV, "SpikingJelly 2.0")
OVERRIDES = {TORCH_CONV: ["winograd=false", "im2col_backward=false"], NO_CACHE: ["cache_cpu_tensors=false"],
             REUSE_HEAP: ["reuse_heap=true", "cache_cpu_tensors=false"],
             RECOMPUTE_CONV: ["recompute_conv=all"]}  # entry -> its snnexp overrides
# model -> (T, batch)
SIZES = {"resnet19": (4, 16), "vggsnn": (10, 16)}
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def make_step(model: str, entry: str, T: int, batch: int, seed: int = 0, momentum: float = 0.9,
              device: str = "cpu"):
    """``(step, info)``: a function running one training step of ``entry``'s ``model`` (SGD, lr 0.01,
    ``momentum``) on ``device``, and facts to print."""
    import torch
    import torch.nn.functional as F

    import sj_twins

    torch.manual_seed(seed)
    spec = sj_twins.MODELS[model]
    module, neuron = sj_twins.snnexp_module(model, T, OVERRIDES.get(entry, []))
    gen = torch.Generator().manual_seed(seed)
    # static images [B, C, H, W] (encoded inside the step) or event frames [T, B, P, H, W] (time-major, as snnexp's
    # collate gives them)
    x = torch.rand(batch, *spec["input"], generator=gen) if spec["static"] else \
        torch.rand(T, batch, *spec["input"], generator=gen)
    y = torch.randint(0, spec["classes"], (batch,), generator=gen)
    x, y = x.to(device), y.to(device)
    info = {"snnexp_params": sj_twins.parameter_count(module.model)}
    if entry.startswith("snnexp"):
        net = module
        params = module.model.parameters()
        info["params"] = info["snnexp_params"]
        info["method"] = type(module.method).__name__
        saving = contextlib.nullcontext if entry == PLAIN else module.spike_packing.saving

        def forward_loss():
            with saving():  # as SNNModule.training_step runs the forward
                return module.method.loss(module(x), y)  # module(x) encodes static inputs over T as training does

        reset = None
    elif entry == "SpikingJelly 2.0":
        from spikingjelly.activation_based import functional

        net = sj_twins.sj_twin(model, neuron)
        sj_twins.copy_weights(module.model, net)  # same weights: the same spikes (up to Winograd's rare flips)
        del module
        params = net.parameters()
        info["params"] = sj_twins.parameter_count(net)
        info["neuron"] = sj_twins.sj_neuron_factory(neuron).description

        def forward_loss():
            inp = sj_twins.sj_encode(x, T) if spec["static"] else x
            return F.cross_entropy(net(inp).mean(0), y)

        def reset():
            functional.reset_net(net)
    else:
        raise ValueError(entry)
    if info["params"] != info["snnexp_params"]:
        raise RuntimeError(f"{model}: {entry} has {info['params']} parameters, snnexp's {info['snnexp_params']}")
    net.to(device).train()
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=momentum)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward_loss()
        loss.backward()
        optimizer.step()
        if reset is not None:
            reset()
        return loss

    step.optimizer = optimizer
    return step, info


def worker(model: str, entry: str, threads: int, warmup: int) -> None:
    """Build ``entry``'s ``model``, run ``warmup`` steps, print one JSON line (ready, or why skipped); then run one
    timed step per ``step`` line read from stdin, printing its seconds, until ``quit``."""
    import torch

    torch.set_num_threads(threads)
    skipped = None
    if entry.startswith("snnexp"):
        from snnexp.kernels import cpu

        if not cpu.available():
            skipped = "fused CPU path unavailable (no compiler?)"
    else:
        try:
            import spikingjelly  # noqa: F401
        except ImportError:
            skipped = "not installed"
    if skipped:
        print(json.dumps({"model": model, "entry": entry, "skipped": skipped}), flush=True)
        return
    T, batch = SIZES[model]
    step, info = make_step(model, entry, T, batch)
    for _ in range(warmup):
        loss = step()
    print(json.dumps({"model": model, "entry": entry, "T": T, "batch": batch, "loss": float(loss), **info}),
          flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0 = time.perf_counter()
        step()
        print(time.perf_counter() - t0, flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads: int) -> str:
    import torch

    try:
        from importlib.metadata import version

        sj = version("spikingjelly")
    except Exception:
        sj = "not installed"
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs, {threads} threads; torch {torch.__version__}, "
            f"SpikingJelly {sj}; {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")


def run_entries(script: str, models, threads: int, allocator: str, steps: int, warmup: int,
                entries=ENTRIES) -> list[dict]:
    """Time every (model, entry) of ``script --worker``, each in its own process, interleaved: the processes of a
    model take turns step by step (in a rotating order), so that a slow spell of a shared machine hits every entry
    alike. One row per entry: the median and min of its ``steps`` steps."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if allocator == "tuned":
        env.update(TUNED_MALLOC)
    rows = []
    for model in models:
        workers, model_rows = [], []
        for entry in entries:  # one at a time: builds and warm-ups do not overlap
            cmd = [sys.executable, script, "--worker", model, entry, "--threads", str(threads), "--warmup",
                   str(warmup)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env)
            line = proc.stdout.readline()
            row = json.loads(line) if line.strip() else {
                "model": model, "entry": entry,
                "skipped": "failed: " + (proc.communicate()[1].strip().splitlines() or ["?"])[-1]}
            model_rows.append(row)
            if "skipped" not in row:
                workers.append((proc, row, []))
            else:
                proc.kill()
        for i in range(steps):
            for proc, row, times in workers[i % len(workers):] + workers[:i % len(workers)]:
                proc.stdin.write("step\n")
                proc.stdin.flush()
                times.append(float(proc.stdout.readline()))
        for proc, row, times in workers:
            proc.communicate("quit\n")
            row.update(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times))
        rows.extend(model_rows)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per entry (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--allocator", choices=("glibc", "tuned"), default="glibc")
    parser.add_argument("--entries", nargs="+", default=list(ENTRIES), choices=list(ENTRIES), metavar="ENTRY",
                        help="which entries to run (default: all)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.threads, args.warmup)
        return 0
    rows = run_entries(__file__, args.models, args.threads, args.allocator, args.steps, args.warmup, args.entries)
    regime = "glibc malloc defaults" if args.allocator == "glibc" else "MALLOC_*_THRESHOLD_=1 GiB for every entry"
    print(f"\nOne training step on the CPU (forward, loss, backward, SGD step): median and min of {args.steps} steps "
          f"after {args.warmup} warm-up steps, the entries' processes taking turns step by step; {regime}.")
    print(f"Machine: {machine_line(args.threads)}\n")
    print("| model | entry | median ms | min ms | ratio vs SpikingJelly |")
    print("|---|---|---|---|---|")
    for model in args.models:
        T, batch = SIZES[model]
        sj = next((r for r in rows if r["model"] == model and r["entry"] == "SpikingJelly 2.0" and "skipped" not in r),
                  None)
        for r in (r for r in rows if r["model"] == model):
            label = f"{model} (T={T}, B={batch})"
            if "skipped" in r:
                print(f"| {label} | {r['entry']} | {r['skipped']} | | |")
                continue
            ratio = f"{sj['median_ms'] / r['median_ms']:.2f}x" if sj else "-"
            print(f"| {label} | {r['entry']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | {ratio} |")
    print("\nratio: SpikingJelly's median / the entry's (above 1: faster than SpikingJelly).")
    for model in args.models:
        done = [r for r in rows if r["model"] == model and "skipped" not in r]
        counts = ", ".join(f"{r['entry']} {r['params']:,}" for r in done)
        print(f"{model} parameters: {counts}" + (" (equal)" if len({r['params'] for r in done}) == 1 else ""))
    for r in rows:
        if r.get("neuron"):
            print(f"{r['model']} SpikingJelly neuron: {r['neuron']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
