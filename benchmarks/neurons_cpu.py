"""CPU table: multi-step LIF forward+backward, [T=8, B=16, 64, 32, 32] float32, 2 threads (by default).

    python benchmarks/neurons_cpu.py [--threads 2] [--shape 8 16 64 32 32] [--repeat 20] [--allocator both]

Side by side, in one run: snnexp's default CPU path (backend="auto": the fused C++ extension), snnexp's eager
torch reference (backend="torch"), SpikingJelly 2.0 (LIFNode, step_mode="m"), snntorch (Leaky, stepped over T).
Peers are imported if installed, else reported as "not installed". Same neuron for all: tau=2 (snntorch:
beta=0.5), v_threshold=1, hard reset to 0, sigmoid surrogate alpha=4. Each entry runs in a fresh subprocess;
time is the best (min) and median of ``--repeat`` forward+backward calls after warm-up (and forward alone;
the ratio uses the min, which is robust to other processes sharing the cores); peak memory is the
growth of the process's peak RSS over its RSS before the first call (input and its grad preallocated).

Allocator: with glibc's defaults every fresh output of 32 MiB or more is a new mmap whose 4 KiB pages fault on
first touch, which costs more than a LIF neuron's arithmetic. snnexp's CPU path takes its outputs from a cache
of freed buffers; the others allocate afresh. ``--allocator tuned`` runs every entry with
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised to 1 GiB (glibc then reuses its heap, as
jemalloc or tcmalloc would), which shows the kernels' speed without page faults on either side; ``both``
(the default) prints the two tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ENTRIES = ("snnexp (default CPU)", "snnexp (torch reference)", "SpikingJelly 2.0", "snntorch")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(entry: str):
    """A function x_seq -> spikes for the entry, or a string saying why not."""
    import torch

    if entry.startswith("snnexp"):
        from snnexp.neurons import LIF
        from snnexp.neurons.surrogate import Sigmoid

        backend = "auto" if "default" in entry else "torch"
        lif = LIF(tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(4.0), backend=backend)
        if backend == "auto":
            from snnexp.kernels import cpu

            if not cpu.available():
                return "fused CPU path unavailable (no compiler?)"
        return lif
    if entry == "SpikingJelly 2.0":
        try:
            import spikingjelly
            from spikingjelly.activation_based import functional, neuron, surrogate
        except ImportError:
            return "not installed"
        node = neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.Sigmoid(alpha=4.0),
                              step_mode="m")

        def run(x):
            functional.reset_net(node)
            return node(x)

        run.version = getattr(spikingjelly, "__version__", "?")
        return run
    if entry == "snntorch":
        try:
            import snntorch
            from snntorch import surrogate as sts
        except ImportError:
            return "not installed"
        leaky = snntorch.Leaky(beta=0.5, threshold=1.0, spike_grad=sts.sigmoid(slope=4.0), reset_mechanism="zero")

        def run(x):
            mem = leaky.init_leaky()
            out = []
            for t in range(x.shape[0]):
                spk, mem = leaky(x[t], mem)
                out.append(spk)
            return torch.stack(out)

        return run
    raise ValueError(entry)


def worker(entry: str, shape: list[int], threads: int, repeat: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    fn = _build(entry)
    if isinstance(fn, str):
        return {"entry": entry, "skipped": fn}
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) + 0.8).requires_grad_()
    grad = torch.randn(shape, generator=gen)
    x.grad = torch.zeros_like(x)
    base = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def fwd_bwd():
        s = fn(x)
        s.backward(grad)
        return s

    for _ in range(3):
        fwd_bwd()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fwd_bwd()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        fwd = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(x)
            fwd.append(time.perf_counter() - t0)
    return {
        "entry": entry,
        "fwd_ms": 1e3 * min(fwd),
        "fwd_bwd_ms": 1e3 * min(times),
        "fwd_bwd_median_ms": 1e3 * statistics.median(times),
        "peak_mib": max(0, peak - max(base, peak_before if peak_before > base else base)) / 2**20,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 16, 64, 32, 32])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--allocator", choices=("glibc", "tuned", "both"), default="both")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.shape, args.threads, args.repeat)))
        return 0
    for allocator in ("glibc", "tuned") if args.allocator == "both" else (args.allocator,):
        table(args, allocator)
    return 0


TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def table(args, allocator: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if allocator == "tuned":
        env.update(TUNED_MALLOC)
    rows = []
    for entry in ENTRIES:
        cmd = [sys.executable, __file__, "--worker", entry, "--threads", str(args.threads), "--repeat",
               str(args.repeat), "--shape", *map(str, args.shape)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            rows.append({"entry": entry, "skipped": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    numel = 1
    for d in args.shape:
        numel *= d
    regime = "glibc malloc defaults" if allocator == "glibc" else "tuned malloc for every entry (MALLOC_*_THRESHOLD_=1 GiB)"
    print(f"\nLIF fwd+bwd on CPU, shape {args.shape} float32 ({numel * 4 / 2**20:.0f} MiB input), "
          f"{args.threads} threads, best of {args.repeat} (median in brackets); {regime}")
    print(f"{'implementation':<26} {'fwd ms':>9} {'fwd+bwd ms':>11} {'(median)':>10} {'peak MiB':>9} {'vs SJ 2.0':>10}")
    sj = next((r for r in rows if r["entry"] == "SpikingJelly 2.0" and "skipped" not in r), None)
    for r in rows:
        if "skipped" in r:
            print(f"{r['entry']:<26} {r['skipped']}")
            continue
        speed = f"{sj['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x" if sj else "-"
        print(f"{r['entry']:<26} {r['fwd_ms']:>9.2f} {r['fwd_bwd_ms']:>11.2f} {r['fwd_bwd_median_ms']:>10.2f} "
              f"{r['peak_mib']:>9.1f} {speed:>10}")


if __name__ == "__main__":
    sys.exit(main())
