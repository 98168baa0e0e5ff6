"""snnexp models: a registry of spiking architectures returning ``ModelOutput``.

    from snnexp.models import create_model
    from snnexp.models.encoders import DirectEncoder
    model = create_model("resnet19", neuron=partial(LIF, tau=2.0), input_shape=(3, 32, 32), num_classes=10)
    out = model(DirectEncoder()(images, 4))   # [B, 3, 32, 32] -> [4, B, 3, 32, 32] -> out.logits [4, B, 10]

A model takes only time-major sequences ``[T, B, *input_shape]`` and reads T from them; static inputs are
encoded by ``snnexp.models.encoders``. Every option of ``conf/model`` is a registered name (``sdt_2_512``, ...).
"""

from snnexp.models import encoders
from snnexp.models.layers import SeqToBatch
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, create_model, list_models, register_model, register_variant


def _import_families() -> None:
    """Import every module of this package, so each family's ``@register_model`` factories are registered: a new
    family file needs no line here."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_families()

__all__ = ["ModelOutput", "ModelConfigError", "SeqToBatch", "create_model", "encoders", "list_models",
           "register_model", "register_variant"]
