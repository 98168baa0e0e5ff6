"""One-epoch CPU time of each architecture at its CIFAR (or ModelNet) size, extrapolated from timed steps.

    python benchmarks/epoch_cpu.py [--threads 2] [--batch 16] [--steps 3]

Times forward + backward + optimiser step of real training steps (after one warm-up step) on random data of the
dataset's shape, then multiplies by the number of steps an epoch has (CIFAR: 50,000 images; ModelNet40: 9,843
shapes). Prints a table.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from snnexp.models import create_model
from snnexp.models.encoders import DirectEncoder
from snnexp.neurons import LIF

# name, factory kwargs, input shape, classes, T, epoch size
MODELS = [
    ("convnet", {}, (3, 32, 32), 10, 4, 50_000),
    ("resnet18", {}, (3, 32, 32), 10, 4, 50_000),
    ("resnet19", {}, (3, 32, 32), 10, 2, 50_000),
    ("resnet20", {}, (3, 32, 32), 10, 4, 50_000),
    ("resnet34", {}, (3, 32, 32), 10, 4, 50_000),
    ("vggsnn", {}, (2, 48, 48), 10, 10, 9_000),
    ("sdt", {"layers": 2, "dim": 512}, (3, 32, 32), 10, 4, 50_000),
    ("stmixer", {}, (3, 32, 32), 100, 1, 50_000),
    ("pointnet", {}, (3, 1024), 40, 1, 9_843),
]


def time_model(name, kwargs, shape, classes, T, batch, steps) -> float:
    model = create_model(name, neuron=partial(LIF), input_shape=shape, num_classes=classes, **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    # static inputs repeated T times (direct encoding), event frames T distinct steps
    x = DirectEncoder()(torch.rand(batch, *shape), T) if name != "vggsnn" else torch.rand(T, batch, *shape)
    y = torch.randint(0, classes, (batch,))

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).logits.mean(0), y)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| model | input | T | s/step (batch {args.batch}) | epoch, min (extrapolated) |")
    print("|---|---|---|---|---|")
    for name, kwargs, shape, classes, T, size in MODELS:
        per_step = time_model(name, kwargs, shape, classes, T, args.batch, args.steps)
        epoch = per_step * size / args.batch
        label = name + ("_2_512" if name == "sdt" else "")
        print(f"| {label} | {'x'.join(map(str, shape))} | {T} | {per_step:.2f} | {epoch / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
