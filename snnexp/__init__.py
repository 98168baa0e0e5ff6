"""snnexp: config-driven experiments with spiking neural networks.

Compose a dataset, an architecture, a spiking neuron and a training method from the command line
(``python -m snnexp method=tet model=resnet34 data=cifar10dvs``) and train with PyTorch Lightning.
"""

__version__ = "0.1.0"
