"""Spike-driven Transformer (Yao, Hu, Zhou, Yuan, Tian, Xu, Li; "Spike-driven Transformer", NeurIPS 2023;
BICLab/Spike-Driven-Transformer, ``model/spikeformer.py``, ``module/sps.py``, ``module/ms_conv.py``).

Built layer by layer as the official code builds it, in snnexp's time-major layout ``[T, B, C, H, W]``:

    SPS     4 x (Conv3x3 no bias - BN - neuron) to D/8, D/4, D/2, D; MaxPool(3, 2, 1) after stage i when
            ``pooling[i] == "1"`` (stage 4 pools after its BN, before its neuron);
            relative position embedding  x = BN(Conv3x3(spikes)) + (stage-4 BN output)
    SDSA    x' = neuron(x);  Q, K, V = neuron(BN(Conv1x1 no bias (x')));
            KV = neuron_{Vth=0.5}(sum_tokens K * V)  per head;   x = x + DropPath(BN(Conv1x1(Q * KV)))
    MLP     x = x + DropPath(BN(Conv1x1(neuron(BN(Conv1x1(neuron(x)))))))     (hidden width mlp_ratio * D)
    head    features = neuron(mean_tokens(x));  logits[t] = Linear(features[t])

Residuals join the membrane path before the next neuron (membrane shortcut), so every neuron emits spikes and
every matrix product multiplies spikes. With ``kv_pool=True`` (the official ``dvs_mode``) a 3x3 stride-1
max-pool ("Erode") is applied, as in the official code, to K and V (over H x W), to K * V and to Q * KV (over
the last two axes of the per-head ``[tokens, channels]`` layout).

Stochastic depth (``drop_path_rate``, as the official configs set, e.g. 0.2 for ImageNet 8-384): block i of L
(i = 0..L-1) drops its SDSA and MLP residual branches with probability ``drop_path_rate * i / (L - 1)`` (timm's
ViT rule), per sample and the same at every time step (:class:`~snnexp.models.layers.SeqDropPath`). The two BNs that end
those branches feed a residual sum: they are built with ``norm_layer(..., residual=True)``.

Named sizes "layers-dim" of the paper are registered variants (``sdt_2_512``, ``sdt_8_384``, ...) of the one
factory :func:`sdt`, each with its yaml ``conf/model/sdt_<layers>_<dim>.yaml``.

Parameter count: the official module also builds ``attn_lif`` and a ``talking_heads`` Conv1d(heads, heads, 1)
that its forward never uses. Neurons hold no parameters there, but ``talking_heads`` holds heads^2 weights per
block; snnexp leaves the unused module out (a parameter that never gets a gradient trips DDP and gradient
checks), so a model here has ``layers * heads^2`` fewer parameters than ``sum(p.numel())`` of the official one:
2-512 on CIFAR-100 10,279,588 here vs 10,279,716 official (paper: 10.28M); 8-768 on ImageNet 66,338,632 vs
66,339,144 (paper: 66.34M).
"""

from typing import Callable

import torch
from torch import nn

from snnexp.models.binary import WeightsFn, init_weight_, real_weights, weights_for
from snnexp.models.layers import SeqToBatch, SpikingModel, conv_bn, drop_path, image_shape
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, register_model, register_variant


class Erode(nn.Module):
    """3x3 stride-1 max-pool over the last two axes of any tensor (the official ``Erode``, a MaxPool3d with
    kernel (1, 3, 3) applied to a 5-D tensor)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x.reshape(-1, 1, *x.shape[-2:])).reshape(x.shape)


class TokenSum(nn.Module):
    """The sum over tokens of the masked ``K * V``: SDSA's only additions, one per nonzero entry (its products of
    spikes are masks), which is how the paper counts its energy (``adds_nonzero_inputs``: see
    :class:`snnexp.metrics.OperationCounter`)."""

    adds_nonzero_inputs = True

    def forward(self, kv: torch.Tensor) -> torch.Tensor:
        return kv.sum(dim=-2, keepdim=True)


class SPS(nn.Module):
    """Spiking patch splitting with the relative position embedding (official ``MS_SPS``). The first conv
    reads the input and keeps real weights; the others are built through ``weights``."""

    def __init__(self, in_channels: int, dim: int, pooling: str, neuron: Callable[..., nn.Module],
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights):
        super().__init__()
        widths = (in_channels, dim // 8, dim // 4, dim // 2, dim)
        self.pooling = pooling
        self.convs = nn.ModuleList(
            conv_bn(a, b, 3, norm_layer=norm_layer, weights=real_weights if i == 0 else weights)
            for i, (a, b) in enumerate(zip(widths, widths[1:]))
        )
        self.neurons = nn.ModuleList(neuron() for _ in range(4))
        self.pool = SeqToBatch(nn.MaxPool2d(3, 2, 1))
        self.rpe = conv_bn(dim, dim, 3, norm_layer=norm_layer, weights=weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(3):
            x = self.neurons[i](self.convs[i](x))
            if self.pooling[i] == "1":
                x = self.pool(x)
        x = self.convs[3](x)
        if self.pooling[3] == "1":
            x = self.pool(x)
        return self.rpe(self.neurons[3](x)) + x  # membrane shortcut: the RPE joins the stage-4 BN output


class SDSA(nn.Module):
    """Spike-driven self-attention (official ``MS_SSA_Conv``, mode "direct_xor"), with its shortcut."""

    conversion_blocker = "spike-driven self-attention multiplies spikes (Q * KV): no ReLU network computes that"

    def __init__(self, dim: int, heads: int, neuron: Callable[..., nn.Module], kv_pool: bool,
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights, drop_path_rate: float = 0.0):
        super().__init__()
        self.heads = heads
        self.sn_in = neuron()
        self.q, self.k, self.v = (conv_bn(dim, dim, 1, norm_layer=norm_layer, weights=weights) for _ in range(3))
        self.q_sn, self.k_sn, self.v_sn = (neuron() for _ in range(3))
        self.token_sum = TokenSum()
        self.kv_sn = neuron(v_threshold=0.5)
        self.proj = conv_bn(dim, dim, 1, bias=True, norm_layer=norm_layer, residual=True, weights=weights)
        self.erode = Erode() if kv_pool else None
        self.drop_path = drop_path(drop_path_rate)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W] -> [T, B, heads, N, C / heads]``."""
        T, B, C = x.shape[:3]
        return x.flatten(3).transpose(-1, -2).reshape(T, B, -1, self.heads, C // self.heads).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.sn_in(x)
        q, k, v = self.q_sn(self.q(x)), self.k_sn(self.k(x)), self.v_sn(self.v(x))
        if self.erode is not None:
            k, v = self.erode(k), self.erode(v)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        kv = k * v
        if self.erode is not None:
            kv = self.erode(kv)
        kv = self.kv_sn(self.token_sum(kv))  # [T, B, heads, 1, C / heads]
        out = q * kv
        if self.erode is not None:
            out = self.erode(out)
        out = out.transpose(3, 4).reshape(identity.shape)
        return identity + self.drop_path(self.proj(out))


class MLP(nn.Module):
    """Official ``MS_MLP_Conv``: two Conv1x1(bias)-BN layers, each after a neuron, with the shortcut (and an
    inner shortcut when the hidden width equals the input width)."""

    def __init__(self, dim: int, hidden: int, neuron: Callable[..., nn.Module], norm_layer: NormLayer = batch_norm,
                 weights: WeightsFn = real_weights, drop_path_rate: float = 0.0):
        super().__init__()
        self.fc1_sn = neuron()
        self.fc1 = conv_bn(dim, hidden, 1, bias=True, norm_layer=norm_layer, weights=weights)
        self.fc2_sn = neuron()
        self.fc2 = conv_bn(hidden, dim, 1, bias=True, norm_layer=norm_layer, residual=True, weights=weights)
        self.inner_shortcut = hidden == dim
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.fc1(self.fc1_sn(x))
        if self.inner_shortcut:
            x = identity = x + identity
        return identity + self.drop_path(self.fc2(self.fc2_sn(x)))


class Block(nn.Module):
    """Encoder block: x = SDSA(x) (with shortcut); x = MLP(x) (with shortcut); both branches dropped with
    probability ``drop_path_rate`` in training."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, neuron: Callable[..., nn.Module], kv_pool: bool,
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights, drop_path_rate: float = 0.0):
        super().__init__()
        self.attn = SDSA(dim, heads, neuron, kv_pool, norm_layer, weights, drop_path_rate)
        self.mlp = MLP(dim, int(dim * mlp_ratio), neuron, norm_layer, weights, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


class SpikeDrivenTransformer(SpikingModel):
    """SPS -> ``layers`` blocks -> mean over tokens -> neuron -> Linear, per time step.

    Taps: "block1".."blockL" (each block's output, the membrane-path tensor ``[T, B, D, h, w]``) and "features"
    (the head neuron's spikes ``[T, B, D]``), so ``logits == model.classifier(taps["features"])``.

    ``norm_layer`` builds every BN; ``hidden_weights`` builds every Conv/Linear but the first SPS conv (it reads
    the input) and the classifier (the output), which keep real weights.
    """

    def __init__(self, *, neuron, input_shape, num_classes, layers=2, dim=256, heads=8, mlp_ratio=4.0,
                 pooling="0011", kv_pool=False, drop_path_rate=0.0, norm_layer: NormLayer = batch_norm,
                 hidden_weights: WeightsFn = real_weights):
        super().__init__(input_shape, num_classes)
        C, H, W = image_shape(input_shape, "Spike-driven Transformer")
        pooling = str(pooling)
        if len(pooling) != 4 or set(pooling) - {"0", "1"}:
            raise ModelConfigError(
                f"Spike-driven Transformer: pooling must be 4 flags of 0/1, one per SPS stage (e.g. model.pooling="
                f"'0011' for CIFAR, '1111' for ImageNet); got {pooling!r}."
            )
        if dim % 8 or dim % heads:
            raise ModelConfigError(
                f"Spike-driven Transformer: dim must be divisible by 8 (SPS widths D/8..D) and by heads; got "
                f"dim={dim}, heads={heads} (set model.dim / model.heads)."
            )
        if layers < 1:
            raise ModelConfigError(f"Spike-driven Transformer: layers must be >= 1, got {layers}.")
        if not 0 <= drop_path_rate < 1:
            raise ModelConfigError(f"Spike-driven Transformer: drop_path_rate must be in [0, 1), got "
                                   f"{drop_path_rate} (set model.drop_path_rate=...).")
        self.patch_embed = SPS(C, dim, pooling, neuron, norm_layer, hidden_weights)
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, layers, device="cpu")]  # timm ViT rule
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, neuron, kv_pool, norm_layer, hidden_weights, rate)
                                    for rate in rates)
        self.head_sn = neuron()
        self.num_features = dim
        self.classifier = SeqToBatch(nn.Linear(dim, num_classes))

        for m in self.modules():  # the official _init_weights: conv weights trunc-normal(0.02); BN 1, 0
            if isinstance(m, nn.Conv2d):
                init_weight_(m, nn.init.trunc_normal_, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.patch_embed(self.check_sequence(x))
        taps = self.new_taps()
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            taps[f"block{i}"] = x
        features = self.head_sn(x.flatten(3).mean(3))
        taps["features"] = features
        return ModelOutput(logits=self.classifier(features), taps=taps)


# The factory spells out its keyword arguments: snnexp.config derives the model config schema from them.

@register_model("sdt")
def sdt(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, layers: int = 2,
        dim: int = 256, heads: int = 8, mlp_ratio: float = 4.0, pooling: str = "0011", kv_pool: bool = False,
        drop_path_rate: float = 0.0, norm: str = "bn", binary_weights: bool = False) -> SpikeDrivenTransformer:
    """Spike-driven Transformer "layers-dim" (official heads 8, mlp_ratio 4 in every released config).

    pooling: one flag per SPS stage ('0011' CIFAR 32 px and CIFAR10-DVS 64 px, '0111' DVS Gesture 128 px,
    '1111' ImageNet 224 px). kv_pool: the official DVS-only Erode max-pool in SDSA. drop_path_rate: stochastic
    depth of the last block (0 for the first, linear in between).
    """
    return SpikeDrivenTransformer(neuron=neuron, input_shape=input_shape, num_classes=num_classes, layers=layers,
                                  dim=dim, heads=heads, mlp_ratio=mlp_ratio, pooling=pooling, kv_pool=kv_pool,
                                  drop_path_rate=drop_path_rate, norm_layer=make_norm_layer(norm, neuron),
                                  hidden_weights=weights_for(binary_weights))


# The paper's named sizes "layers-dim" (conf/model/sdt_<layers>_<dim>.yaml): sdt with other defaults.
sdt_2_256 = register_variant("sdt_2_256", sdt, "Spike-driven Transformer 2-256: CIFAR-10/100, CIFAR10-DVS, DVS "
                             "Gesture.", layers=2, dim=256)
sdt_2_512 = register_variant("sdt_2_512", sdt, "Spike-driven Transformer 2-512: CIFAR-10/100.", layers=2, dim=512)
sdt_8_384 = register_variant("sdt_8_384", sdt, "Spike-driven Transformer 8-384: ImageNet 224 px.", layers=8, dim=384,
                             pooling="1111")
sdt_6_512 = register_variant("sdt_6_512", sdt, "Spike-driven Transformer 6-512: ImageNet 224 px.", layers=6, dim=512,
                             pooling="1111")
sdt_8_512 = register_variant("sdt_8_512", sdt, "Spike-driven Transformer 8-512: ImageNet 224 px.", layers=8, dim=512,
                             pooling="1111")
sdt_10_512 = register_variant("sdt_10_512", sdt, "Spike-driven Transformer 10-512: ImageNet 224 px.", layers=10,
                              dim=512, pooling="1111")
sdt_8_768 = register_variant("sdt_8_768", sdt, "Spike-driven Transformer 8-768: ImageNet 224 px.", layers=8, dim=768,
                             pooling="1111")
