"""snnexp models: a registry of spiking architectures returning ``ModelOutput``.

    from snnexp.models import create_model
    model = create_model("resnet19", neuron=partial(LIF, tau=2.0), input_shape=(3, 32, 32), num_classes=10, T=4)
    out = model(images)            # [B, 3, 32, 32] or [T, B, 3, 32, 32] -> out.logits [T, B, 10]
"""

from snnexp.models.layers import SeqToBatch
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, create_model, list_models, register_model

# Importing the family modules registers their models.
from snnexp.models import convnet, resnet, spikedriven, stmixer, vgg  # noqa: E402,F401  isort: skip
from snnexp.models import pointnet  # noqa: E402,F401  isort: skip

__all__ = ["ModelOutput", "ModelConfigError", "SeqToBatch", "create_model", "list_models", "register_model"]
