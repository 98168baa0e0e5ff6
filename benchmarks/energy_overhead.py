"""What counting operations and energy costs: training steps (no hooks: they must not slow down) and evaluation
passes, with and without :class:`snnexp.metrics.OperationCounter`, side by side in one process.

    python benchmarks/energy_overhead.py [--repeats 5] [--device cpu]

For each model (the default convnet on digits-sized input, ResNet-19 and the Spike-driven Transformer at 32 px,
small batches so a CPU finishes in a minute or two) it times:

- ``train step``: forward + backward + SGD step, before any evaluation and again after counted evaluation passes
  (the counter's hooks must all be gone: training runs exactly as without it);
- ``eval pass``: an evaluation pass of ``--batches`` batches, plain (``torch.no_grad`` forward) against counted
  (``start``, the calibrating extra forward on the first batch, the counting hooks on every batch, ``stop``).

The median of ``--repeats`` timings is printed; the overhead column is counted / plain - 1, split into the first
batch's extra time (the calibration, once per pass) and the relative cost of each later batch (one nonzero count per
layer), so the overhead of a pass of any length follows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from snnexp.metrics import OperationCounter
from snnexp.models import create_model
from snnexp.neurons import LIF

MODELS = {  # name: (factory kwargs, input shape, batch size, T)
    "convnet (digits)": ({"name": "convnet"}, (1, 8, 8), 64, 4),
    "resnet19 (32 px)": ({"name": "resnet19"}, (3, 32, 32), 8, 2),
    "sdt 2-256 (32 px)": ({"name": "sdt", "layers": 2, "dim": 256}, (3, 32, 32), 8, 2),
}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def logits(output):
    return output.logits if hasattr(output, "logits") else output


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(logits(model(x)).mean(0), y)
    loss.backward()
    optimizer.step()


def measure(name: str, kwargs: dict, shape, batch: int, T: int, batches: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    kwargs = dict(kwargs)
    model = create_model(kwargs.pop("name"), neuron=LIF, input_shape=shape, num_classes=10, **kwargs).to(device)
    counter = OperationCounter(model)  # built as SNNModule builds it; only evaluation passes start it
    x = torch.randn(T, batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    @torch.no_grad()
    def plain(n: int = batches):
        for _ in range(n):
            model(x)

    @torch.no_grad()
    def counted(n: int = batches):
        counter.start()
        for _ in range(n):
            counter.forward(lambda: model(x), samples=batch)
        counter.stop()

    model.train()
    train_before = timed(lambda: train_step(model, x, y, optimizer), repeats)
    model.eval()
    evaluation = {"plain": timed(plain, repeats), "counted": timed(counted, repeats),
                  "plain1": timed(lambda: plain(1), repeats), "counted1": timed(lambda: counted(1), repeats)}
    evaluation["calibration"] = evaluation["counted1"] - evaluation["plain1"]  # the first batch's extra cost
    evaluation["per_batch"] = (evaluation["counted"] - evaluation["counted1"]
                               - evaluation["plain"] + evaluation["plain1"]) / (batches - 1) / evaluation["plain1"]
    model.train()  # after counted evaluation passes: training must run exactly as before
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    train_after = timed(lambda: train_step(model, x, y, optimizer), repeats)
    return {"model": name, "train_before": train_before, "train_after": train_after, "hooks": hooks, **evaluation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10, help="batches per evaluation pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}; an evaluation pass is {args.batches} batches")
    print()
    print("| model | train step | train step after counted evals | hooks left | eval pass plain | "
          "eval pass counted | overhead | first batch extra | each later batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (kwargs, shape, batch, T) in MODELS.items():
        r = measure(name, kwargs, shape, batch, T, args.batches, args.repeats, args.device)
        print(f"| {r['model']} (B={batch}, T={T}) | {1e3 * r['train_before']:.1f} ms | {1e3 * r['train_after']:.1f} ms | "
              f"{r['hooks']} | {1e3 * r['plain']:.0f} ms | {1e3 * r['counted']:.0f} ms | "
              f"{100 * (r['counted'] / r['plain'] - 1):+.0f}% | {1e3 * r['calibration']:+.0f} ms | "
              f"{100 * r['per_batch']:+.0f}% |")


if __name__ == "__main__":
    main()
