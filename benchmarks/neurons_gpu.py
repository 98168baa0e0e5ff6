"""GPU table: multi-step LIF / PLIF, snnexp CuPy vs snnexp torch vs SpikingJelly (CuPy, 0.0.0.0.14) vs
SpikingJelly 2.0 (its automatic CUDA/Triton path), plus bandwidth and the Open Neuromorphic setting.

    python benchmarks/neurons_gpu.py [--quick] [--sj-legacy DIR] [--repeat 20]

- shapes ``[T, 64, 2^16]`` and ``[T, 64, 2^20]``, T in {4, 8, 16, 32}; fp32, fp16, bf16; LIF and PLIF;
  forward and forward+backward time (CUDA events, median) and peak memory (``max_memory_allocated`` above the
  inputs); tau=2, v_threshold=1, hard reset 0, sigmoid surrogate.
- Bandwidth: a device-to-device copy of the same bytes is measured first; a neuron pass moves
  3 tensors (forward: read X, write S and H; backward: read dL/dS and H, write dL/dX; PLIF with decay_input also
  reads X), and the table gives the achieved GB/s as a fraction of the copy's.
- Open Neuromorphic: Linear(16384, 16384) + LIF, batch 16, T = 500, fp32, ATan, forward+backward.

SpikingJelly 2.0 and 0.0.0.0.14 are both the ``spikingjelly`` package, so each implementation runs in its own
subprocess: install the old one apart (``pip install --target /opt/sj14 spikingjelly==0.0.0.0.14 cupy-cuda12x``
or the cupy matching your CUDA) and pass ``--sj-legacy /opt/sj14``; entries that cannot import are reported as
"not installed" and the rest of the table still runs. Out-of-memory cases are reported as "OOM".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

IMPLS = ("snnexp cupy", "snnexp torch", "SJ 0.0.0.0.14 cupy", "SJ 2.0")
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def configs(quick: bool):
    ts = (4, 8) if quick else (4, 8, 16, 32)
    widths = (2**16,) if quick else (2**16, 2**20)
    for n in widths:
        for t in ts:
            for dtype in DTYPE_NAMES:
                for neuron in ("lif", "plif"):
                    yield {"shape": [t, 64, n], "dtype": dtype, "neuron": neuron}


# ------------------------------------------------------------------------------------------- implementations


def build(impl: str, neuron: str, surrogate: str = "sigmoid"):
    """A module x_seq -> spikes (on CUDA), or a string saying why not."""
    import torch

    if impl.startswith("snnexp"):
        from snnexp.neurons import LIF, PLIF
        from snnexp.neurons.surrogate import ATan, Sigmoid

        backend = "cupy" if impl.endswith("cupy") else "torch"
        if backend == "cupy":
            import snnexp.kernels as kernels

            if not kernels.cupy_available():
                return f"cupy unavailable: {kernels.cupy_import_error()}"
        sg = ATan() if surrogate == "atan" else Sigmoid(4.0)
        cls = LIF if neuron == "lif" else PLIF
        return cls(tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate=sg, backend=backend).cuda()
    try:
        from spikingjelly.activation_based import functional, neuron as sjn, surrogate as sjs
    except ImportError as error:
        return f"not installed ({error})"
    sg = sjs.ATan() if surrogate == "atan" else sjs.Sigmoid(alpha=4.0)
    kwargs = dict(v_threshold=1.0, v_reset=0.0, surrogate_function=sg, step_mode="m")
    if impl.startswith("SJ 0.0"):
        kwargs["backend"] = "cupy"
    node = (sjn.LIFNode(tau=2.0, **kwargs) if neuron == "lif" else sjn.ParametricLIFNode(init_tau=2.0, **kwargs)).cuda()

    class Reset(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.node = node

        def forward(self, x):
            functional.reset_net(self.node)
            return self.node(x)

    return Reset()


def cuda_time(fn, repeat: int) -> float:
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(nbytes: int, repeat: int) -> float:
    """GB/s of a device-to-device copy (read + write counted) of ``nbytes``."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time(lambda: dst.copy_(src), repeat)
    return 2 * nbytes / ms / 1e6


def run_one(impl: str, cfg: dict, repeat: int) -> dict:
    import torch

    dtype = getattr(torch, cfg["dtype"])
    out = dict(cfg, impl=impl)
    module = build(impl, cfg["neuron"])
    if isinstance(module, str):
        return dict(out, skipped=module)
    try:
        torch.cuda.empty_cache()
        x = (torch.randn(cfg["shape"], device="cuda", dtype=torch.float32) + 0.8).to(dtype).requires_grad_()
        grad = torch.randn(cfg["shape"], device="cuda", dtype=dtype)
        with torch.no_grad():
            fwd_ms = cuda_time(lambda: module(x), repeat)

        def fwd_bwd():
            x.grad = None
            module(x).backward(grad)

        fwd_bwd_ms = cuda_time(fwd_bwd, repeat)
        torch.cuda.synchronize()
        x.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    except torch.cuda.OutOfMemoryError:
        return dict(out, skipped="OOM")
    except Exception as error:  # a peer that does not support this dtype, ...
        return dict(out, skipped=f"{type(error).__name__}: {str(error).splitlines()[0][:80]}")
    elsize = torch.empty((), dtype=dtype).element_size()
    numel = x.numel()
    moved_fwd = 3 * numel * elsize
    moved_bwd = (4 if cfg["neuron"] == "plif" else 3) * numel * elsize
    return dict(out, fwd_ms=fwd_ms, fwd_bwd_ms=fwd_bwd_ms, peak_mib=peak,
                fwd_gbs=moved_fwd / fwd_ms / 1e6, bwd_gbs=moved_bwd / max(fwd_bwd_ms - fwd_ms, 1e-6) / 1e6)


def open_neuromorphic(impl: str, repeat: int) -> dict:
    """Linear(16384, 16384) + LIF, batch 16, T = 500, fp32, ATan: forward+backward ms and peak MiB."""
    import torch

    out = {"impl": impl}
    lif = build(impl, "lif", surrogate="atan")
    if isinstance(lif, str):
        return dict(out, skipped=lif)
    torch.manual_seed(0)
    linear = torch.nn.Linear(16384, 16384).cuda()
    x = torch.randn(500, 16, 16384, device="cuda")
    try:
        def step():
            linear.zero_grad(set_to_none=True)
            lif(linear(x)).sum().backward()

        ms = cuda_time(step, max(3, repeat // 4))
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return dict(out, fwd_bwd_ms=ms, peak_mib=(torch.cuda.max_memory_allocated() - base) / 2**20)
    except torch.cuda.OutOfMemoryError:
        return dict(out, skipped="OOM")


def worker(impl: str, quick: bool, repeat: int) -> None:
    import torch

    for cfg in configs(quick):
        print(json.dumps(run_one(impl, cfg, repeat)), flush=True)
        torch.cuda.empty_cache()
    print(json.dumps(dict(open_neuromorphic(impl, repeat), open_neuromorphic=True)), flush=True)


# ------------------------------------------------------------------------------------------------------ main


def print_table(rows: list[dict], bw: float) -> None:
    """One line per (neuron, dtype, shape, implementation); bandwidth as a fraction of the copy's ``bw`` GB/s."""
    print(f"\n{'neuron':<6} {'dtype':<9} {'shape':<18} {'impl':<20} {'fwd ms':>8} {'f+b ms':>8} {'peak MiB':>9} "
          f"{'fwd bw':>7} {'bwd bw':>7}  {'f+b speed-up of snnexp cupy':>28}")
    timed = {(r["impl"], r["neuron"], r["dtype"], str(r["shape"])): r for r in rows if "fwd_bwd_ms" in r}
    rows.sort(key=lambda r: (r.get("neuron", ""), r.get("dtype", ""), r.get("shape", [0, 0, 0])[2],
                             r.get("shape", [0])[0], IMPLS.index(r["impl"])))
    for r in rows:
        if "shape" not in r:
            print(f"{'':<6} {'':<9} {'':<18} {r['impl']:<20} {r['skipped']}")
            continue
        head = f"{r['neuron']:<6} {r['dtype']:<9} {str(r['shape']):<18} {r['impl']:<20}"
        if "skipped" in r:
            print(f"{head} {r['skipped']}")
            continue
        ratios = []
        if r["impl"] == "snnexp cupy":
            for peer in ("SJ 0.0.0.0.14 cupy", "SJ 2.0"):
                other = timed.get((peer, r["neuron"], r["dtype"], str(r["shape"])))
                if other:
                    ratios.append(f"{other['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x vs {peer.split()[1]}")
        print(f"{head} {r['fwd_ms']:>8.3f} {r['fwd_bwd_ms']:>8.3f} {r['peak_mib']:>9.0f} "
              f"{r['fwd_gbs'] / bw:>6.0%} {r['bwd_gbs'] / bw:>6.0%}  {', '.join(ratios):>28}")




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only [T, 64, 2^16], T in {4, 8}")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sj-legacy", help="directory with spikingjelly==0.0.0.0.14 installed (pip --target)")
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.quick, args.repeat)
        return 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU")
        return 1
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    bw = copy_bandwidth(1 << 30, args.repeat)
    print(f"device-to-device copy of 1 GiB: {bw:.0f} GB/s (read + write)")
    rows, on_rows = [], []
    for impl in args.impl:
        env = dict(os.environ)
        if impl.startswith("SJ 0.0"):
            if not args.sj_legacy:
                rows.append({"impl": impl, "skipped": "not installed (pass --sj-legacy DIR)"})
                continue
            env["PYTHONPATH"] = os.pathsep.join([args.sj_legacy, env.get("PYTHONPATH", "")])
        cmd = [sys.executable, __file__, "--worker", impl, "--repeat", str(args.repeat)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 and not got:
            rows.append({"impl": impl, "skipped": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:100]})
        for r in got:
            (on_rows if r.pop("open_neuromorphic", False) else rows).append(r)

    print_table(rows, bw)
    print("\nbw: achieved DRAM traffic of the neuron pass as a fraction of the measured copy "
          "(bwd = (fwd+bwd - fwd) time; for peers, their own traffic may be larger than the 3 tensors counted)")
    print("\nOpen Neuromorphic setting: Linear(16384, 16384) + LIF, B=16, T=500, fp32, ATan, forward+backward")
    for r in on_rows:
        print(f"  {r['impl']:<20} " + (r["skipped"] if "skipped" in r else
                                        f"{r['fwd_bwd_ms']:.1f} ms, peak {r['peak_mib']:.0f} MiB"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
