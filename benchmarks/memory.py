"""Peak memory of one training step: snnexp vs the same network from SpikingJelly 2.0.

    python benchmarks/memory.py [--T 8] [--batch 16] [--models resnet19] [--threads 2] [--repeats 3]
                                [--steps 1] [--allocator glibc|mmap] [--entries ENTRY ...]

The step and both sides are those of ``benchmarks/step_cpu.py`` (models built by ``benchmarks/sj_twins.py``:
snnexp's ``python -m snnexp model=<model> neuron=tet_lif`` through ``snnexp.build``, with the encoding inside
the step; the SpikingJelly 2.0 twin with the same weights), except that the optimiser is plain SGD (no momentum,
so it holds no state and the first step allocates nothing that later steps would not). Default: TET's ResNet-19
at T=8, batch 16 of 3x32x32.

CPU: each entry runs in a fresh subprocess. With the model, optimiser, batch and (for snnexp) the fused CPU
extension loaded, the process's resident set is read, its peak is reset (``/proc/self/clear_refs``, Linux >= 4.0;
else the lifetime peak ``ru_maxrss`` is used and the reading is a lower bound when an earlier peak was higher),
one step runs (``--steps``: that many, the peak over all of them), and the growth of the peak over the resident set
before the step is reported. It covers everything the step holds at its peak: activations saved for backward,
gradients, temporaries, and buffers an allocator keeps (snnexp's output-buffer cache included). "kept after" is
the growth that stays resident after the step (gradients are set to None first): caches and allocator slack.
glibc's heap makes the reading vary by about 10% from process to process (SpikingJelly's up to 40%), so each
entry runs ``--repeats`` times: the table gives the median and range. The entry ``snnexp (reuse heap)``
(``reuse_heap=true``) keeps freed blocks in glibc's heap, which fragments: its peak grows over the first steps, so
read it with ``--steps 3``. ``--allocator mmap`` sets ``MALLOC_MMAP_THRESHOLD_=65536`` for every entry: every large
block is then its own mapping, returned when freed, and the peak RSS is close to the peak of live memory.

CUDA (when ``torch.cuda.is_available()``): each entry, in a fresh subprocess, runs one warm-up step on the GPU, then
``torch.cuda.reset_peak_memory_stats()`` and one step; reported is ``max_memory_allocated()`` minus
``memory_allocated()`` before the step. snnexp's neuron then takes its CUDA path (``backend=auto``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

from step_cpu import ENTRIES, SIZES, machine_line  # noqa: E402

MiB = 2**20


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the process's peak resident set (VmHWM) to its current one; False where the kernel cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_worker(model: str, entry: str, T: int, batch: int, threads: int, steps: int = 1) -> dict:
    import torch

    from step_cpu import make_step

    torch.set_num_threads(threads)
    if entry.startswith("snnexp"):
        from snnexp.kernels import cpu

        if not cpu.available():
            return {"skipped": "fused CPU path unavailable (no compiler?)"}
    step, info = make_step(model, entry, T, batch, momentum=0.0)
    params = info["params"]
    gc.collect()
    before = _rss()
    exact = _reset_peak()
    lifetime_peak = _peak()
    for _ in range(steps):  # the peak over all of them: a later step can need more (a fragmented heap)
        step()
        step.optimizer.zero_grad(set_to_none=True)
    peak = _peak()
    gc.collect()
    after = _rss()
    growth = peak - before if exact else max(0, peak - max(before, lifetime_peak))
    return {"peak_mib": growth / MiB, "kept_mib": (after - before) / MiB, "exact": exact,
            "param_mib": params * 4 / MiB, "params": params}


def cuda_worker(model: str, entry: str, T: int, batch: int) -> dict:
    import torch

    from step_cpu import make_step

    step, info = make_step(model, entry, T, batch, momentum=0.0, device="cuda")
    step()  # warm-up: kernels compiled and loaded, allocator pools in place
    torch.cuda.synchronize()
    gc.collect()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return {"peak_mib": (torch.cuda.max_memory_allocated() - before) / MiB, "params": info["params"],
            "device_name": torch.cuda.get_device_name()}


def run(args, device: str) -> list[dict]:
    import statistics
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.allocator == "mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    rows = []
    for model in args.models:
        for entry in args.entries:
            cmd = [sys.executable, __file__, "--worker", device, model, entry, "--T", str(args.T), "--batch",
                   str(args.batch), "--threads", str(args.threads), "--steps", str(args.steps)]
            runs = []
            for _ in range(args.repeats):
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    runs = [{"skipped": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]}]
                    break
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            row = runs[-1]
            if "peak_mib" in row:
                peaks = [r["peak_mib"] for r in runs]
                row = {**row, "peak_mib": statistics.median(peaks), "peak_range": (min(peaks), max(peaks))}
                if "kept_mib" in row:
                    row["kept_mib"] = statistics.median(r["kept_mib"] for r in runs)
            rows.append({"model": model, "entry": entry, **row})
    return rows


def table(rows: list[dict], device: str, args) -> None:
    if device == "cpu":
        regime = "glibc malloc defaults" if args.allocator == "glibc" else "MALLOC_MMAP_THRESHOLD_=65536"
        print(f"\nPeak memory of one training step on the CPU: growth of the peak RSS over the RSS before the step "
              f"(T={args.T}, batch {args.batch}, {args.threads} threads, {regime}; the peak over {args.steps} "
              f"step(s) from a fresh process)\n")
        print("| model | entry | peak MiB, median (range) | kept after MiB | ratio vs SpikingJelly |")
        print("|---|---|---|---|---|")
    else:
        name = next((r["device_name"] for r in rows if "device_name" in r), "CUDA")
        print(f"\nPeak memory of one training step on {name}: max_memory_allocated minus memory_allocated before "
              f"the step (T={args.T}, batch {args.batch})\n")
        print("| model | entry | peak MiB, median (range) | ratio vs SpikingJelly |")
        print("|---|---|---|---|")
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        sj = next((r for r in mine if r["entry"] == "SpikingJelly 2.0" and "skipped" not in r), None)
        for r in mine:
            label = f"{model} (T={args.T}, B={args.batch})"
            if "skipped" in r:
                print(f"| {label} | {r['entry']} | {r['skipped']} |" + (" | |" if device == "cpu" else " |"))
                continue
            ratio = f"{r['peak_mib'] / sj['peak_mib']:.2f}" if sj and sj["peak_mib"] > 0 else "-"
            kept = f" {r['kept_mib']:.0f} |" if device == "cpu" else ""
            low, high = r["peak_range"]
            print(f"| {label} | {r['entry']} | {r['peak_mib']:.0f} ({low:.0f}-{high:.0f}) |{kept} {ratio} |")
    print(f"\nratio: the entry's median peak / SpikingJelly's (below 1: less memory than SpikingJelly); "
          f"{args.repeats} fresh processes per entry.")
    done = [r for r in rows if "skipped" not in r]
    for model in args.models:
        counts = {r["params"] for r in done if r["model"] == model}
        if counts:
            n = counts.pop()
            print(f"{model}: {n:,} parameters ({n * 4 / MiB:.0f} MiB; their gradients as much again)"
                  + ("" if not counts else " -- PARAMETER COUNTS DIFFER"))
    if device == "cpu" and any(not r.get("exact", True) for r in done):
        print("note: this kernel cannot reset the peak RSS; readings are lower bounds (ru_maxrss)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["resnet19"], choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per entry (median reported)")
    parser.add_argument("--steps", type=int, default=1, help="CPU: steps per process, the peak over all of them")
    parser.add_argument("--allocator", choices=("glibc", "mmap"), default="glibc",
                        help="mmap: MALLOC_MMAP_THRESHOLD_=65536 for every entry (RSS close to live memory)")
    parser.add_argument("--entries", nargs="+", default=list(ENTRIES), choices=list(ENTRIES), metavar="ENTRY",
                        help="which entries to run (default: all)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA table even where a GPU is present")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        device, model, entry = args.worker
        if device == "cpu":
            out = cpu_worker(model, entry, args.T, args.batch, args.threads, args.steps)
        else:
            out = cuda_worker(model, entry, args.T, args.batch)
        print(json.dumps(out))
        return 0
    print(f"Machine: {machine_line(args.threads)}")
    table(run(args, "cpu"), "cpu", args)
    import torch

    if torch.cuda.is_available() and not args.no_cuda:
        table(run(args, "cuda"), "cuda", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
