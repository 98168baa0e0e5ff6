"""Going Deeper With Directly-Trained Larger Spiking Neural Networks: STBP-tdBN
(Zheng, Wu, Deng, Hu, Li; AAAI 2021).

    loss = CE( (1/T) sum_t O_t , y )   with every BatchNorm replaced by threshold-dependent BN,
    tdBN(x) = lambda * alpha * V_th * (x - mu) / sqrt(sigma^2 + eps) + beta,  statistics over (B, T, H, W)

The normalisation is a model option every model has (``model.norm=tdbn``, see ``snnexp.models.norm``); this
method is standard direct training whose model is built with ``norm=tdbn`` (a model without the option is
refused at start-up).
"""

from snnexp.methods.sdt import SDT


class TDBN(SDT):
    """STBP with tdBN: cross-entropy on the time-averaged logits, the model built with tdBN in every layer."""

    def model_options(self) -> dict:
        return {"norm": "tdbn"}
