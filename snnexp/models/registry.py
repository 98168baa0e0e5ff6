"""Model registry: ``@register_model("name")`` makes a factory reachable as ``model=name`` (timm-style).

Every factory has the signature
``factory(*, neuron, input_shape, num_classes, T=4, encoder="direct", **hparams) -> nn.Module``,
where ``neuron`` is a callable building one multi-step spiking neuron per spiking layer.
"""

from typing import Callable

from torch import nn

from snnexp.errors import SnnexpError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class ModelConfigError(SnnexpError, ValueError):
    """A model asked for with a name, option or input size it cannot take."""


def register_model(name: str):
    """Decorator registering a model factory under ``name``."""

    def decorator(factory):
        if name in _MODELS:
            raise ValueError(f"A model named {name!r} is already registered ({_MODELS[name].__module__}).")
        _MODELS[name] = factory
        return factory

    return decorator


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the factory's keyword arguments."""
    if name not in _MODELS:
        raise ModelConfigError(f"Unknown model {name!r}; available models: {list_models()} (set model=...).")
    return _MODELS[name](**kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)
