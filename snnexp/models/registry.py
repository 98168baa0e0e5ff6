"""Model registry: ``@register_model("name")`` makes a factory reachable as ``model=name`` (timm-style).

Every factory has the signature

    factory(*, neuron, input_shape, num_classes, **hparams) -> nn.Module

where ``neuron`` is a callable building one multi-step spiking neuron per spiking layer, and every
hyperparameter is a keyword argument with a default (``snnexp.config`` derives the model config schema from the
signature). The model's ``forward`` takes a time-major sequence ``[T, B, *input_shape]``; T is not a
hyperparameter. Named sizes of a family (``sdt_8_384``) are :func:`register_variant` entries: the family's
factory with other defaults.
"""

import functools
import inspect
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


def register_variant(name: str, family: Callable[..., nn.Module], doc: str, **hparams) -> Callable[..., nn.Module]:
    """Register ``name``, a named size of ``family``: the same factory with ``hparams`` as its defaults (all
    still overridable), like timm's ``vit_base_patch16_224``. The returned factory carries the family's
    signature with those defaults, so ``inspect.signature`` and the config schema see the variant's values;
    assign it to a module-level name equal to ``name`` so that a yaml ``_target_`` can name it."""
    signature = inspect.signature(family)
    unknown = set(hparams) - set(signature.parameters)
    if unknown:
        raise TypeError(f"variant {name!r}: {family.__name__} has no parameters {sorted(unknown)}")

    @functools.wraps(family)
    def factory(**kwargs):
        return family(**{**hparams, **kwargs})

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    factory.__signature__ = signature.replace(parameters=[
        p.replace(default=hparams[p.name]) if p.name in hparams else p for p in signature.parameters.values()
    ])
    return register_model(name)(factory)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the factory's keyword arguments."""
    if name not in _MODELS:
        raise ModelConfigError(f"Unknown model {name!r}; available models: {list_models()} (set model=...).")
    return _MODELS[name](**kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)
