"""snnexp: config-driven experiments with spiking neural networks.

Compose a dataset, an architecture, a spiking neuron and a training method from the command line
(``python -m snnexp method=tet model=resnet34 data=cifar10dvs``) and train with PyTorch Lightning; or from
Python with :func:`compose`, :func:`build` and :func:`run` (:mod:`snnexp.api`).
"""

from snnexp.api import build, compose, run

__version__ = "0.1.0"
__all__ = ["build", "compose", "run"]
