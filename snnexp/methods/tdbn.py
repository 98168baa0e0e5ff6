"""Going Deeper With Directly-Trained Larger Spiking Neural Networks: STBP-tdBN
(Zheng, Wu, Deng, Hu, Li; AAAI 2021).

    loss = CE( (1/T) sum_t O_t , y )   with every BatchNorm replaced by threshold-dependent BN,
    tdBN(x) = lambda * alpha * V_th * (x - mu) / sqrt(sigma^2 + eps) + beta,  statistics over (B, T, H, W)

The normalisation is a model option every model has (``model.norm=tdbn``, see ``snnexp.models.norm``); this
method is standard direct training that switches it on for models built with ``norm=bn``.
"""

from snnexp.methods.sdt import SDT
from snnexp.models.norm import TDBatchNorm1d, TDBatchNorm2d, apply_norm


class TDBN(SDT):
    """STBP with tdBN: cross-entropy on the time-averaged logits, tdBN in place of every BatchNorm."""

    def setup(self, model, datamodule):
        if not any(isinstance(m, (TDBatchNorm1d, TDBatchNorm2d)) for m in model.modules()):
            apply_norm(model, "tdbn")
        return model
