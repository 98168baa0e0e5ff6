"""STMixer, the Spiking Token Mixer (Deng, Wu, Du, Gu; "Spiking Token Mixer: An Event-Driven Friendly Former
Structure for Spiking Neural Networks", NeurIPS 2024; brain-intelligence-lab/STMixer_demo, ``models/STMixer.py``,
class ``STMixerV3``).

Only operations an asynchronous, event-driven chip supports: convolution, fully connected and residual
addition; no attention product between two activations, no max-pool. Layout ``[T, B, C, N]`` (N tokens).

    patch embed  main:     Conv3x3-BN-neuron to D/8, D/4, D/2, D, then Conv3x3-BN to 7D/8 (no neuron); the
                           strides are (1, 1, 1, 2, 2) for ``downsample=2`` and (1, 2, 2, 2, 2) for 4
                 shortcut: Conv(kernel = stride = 2^downsample, no bias)-BN, 3 -> D/8
                 x = concat(shortcut, main) over channels, flattened to N = (H / 2^ds) * (W / 2^ds) tokens
    block        x = x + TokenMixer(x);  x = x + FFN(x)
    TokenMixer   neuron -> Conv1d 1x1 -> BN -> neuron -> STM -> neuron -> Conv1d 1x1 -> BN
    STM          channels split into ``heads`` groups; group i is mixed over tokens by a bias-free Linear_i(N -> N)
    FFN          neuron -> Conv1d(D -> rD) -> BN -> neuron -> Conv1d(rD -> D) -> BN        (every conv bias-free)
    head         features = mean over tokens;  logits[t] = Linear(features[t])

STMixer is trained with Surrogate Module Learning (SML, Deng et al., ICML 2023): ANN branches read the
patch-embed output and block outputs. The model itself has none; the taps "patch_embed" and "block1".."blockD"
(``[T, B, D, N]``) are where a method attaches them (the official demo attaches after the patch embed and after
blocks 2, 4, 6, 8), and "features" is the classifier's input.

The BNs that end the TokenMixer and the FFN feed the block's residual sums: they are built with
``norm_layer(..., residual=True)``. With binary weights the two patch-embed convs that read the image and the
classifier keep real weights. Named sizes are registered variants of :func:`stmixer`
(``stmixer_imagenet_8_768``).
"""

from typing import Callable

import torch
from torch import nn

from snnexp.models.binary import WeightsFn, init_weight_, real_weights, weights_for
from snnexp.models.layers import SeqToBatch, SpikingModel, conv_bn, image_shape
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, register_model, register_variant

STRIDES = {2: (1, 1, 1, 2, 2), 4: (1, 2, 2, 2, 2)}  # official SPSV2, downsample_times 2 (32 px) and 4 (224 px)


def conv1d_bn(in_channels: int, out_channels: int, *, norm_layer: NormLayer = batch_norm, residual: bool = False,
              weights: WeightsFn = real_weights) -> SeqToBatch:
    """Bias-free Conv1d 1x1 (built through ``weights``) followed by a 1-d ``norm_layer``, per time step, on
    ``[T, B, C, N]``."""
    return SeqToBatch(nn.Sequential(weights(nn.Conv1d(in_channels, out_channels, 1, bias=False)),
                                    norm_layer(out_channels, dims=1, residual=residual)))


class PatchEmbed(nn.Module):
    """Official ``SPSV2``: a spiking conv stem to 7D/8 channels beside a one-conv shortcut to D/8 channels.
    The two convs that read the image (the stem's first, the shortcut) keep real weights; the others are built
    through ``weights``."""

    def __init__(self, in_channels: int, dim: int, downsample: int, neuron: Callable[..., nn.Module],
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights):
        super().__init__()
        widths = (in_channels, dim // 8, dim // 4, dim // 2, dim, dim // 8 * 7)
        layers = []
        for i, (a, b, s) in enumerate(zip(widths, widths[1:], STRIDES[downsample])):
            layers.append(conv_bn(a, b, 3, s, norm_layer=norm_layer, weights=real_weights if i == 0 else weights))
            if i < 4:
                layers.append(neuron())
        self.main = nn.Sequential(*layers)
        k = 2 ** downsample
        self.shortcut = SeqToBatch(nn.Sequential(nn.Conv2d(in_channels, dim // 8, k, k, bias=False),
                                                 norm_layer(dim // 8)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.shortcut(x), self.main(x)], dim=2).flatten(3)


class STM(nn.Module):
    """Spiking token mixing: ``y[:, :, i*g:(i+1)*g, :] = Linear_i(x[:, :, i*g:(i+1)*g, :])`` over the token axis,
    one bias-free ``Linear(N, N)`` per head (g = C / heads channels per head)."""

    def __init__(self, channels: int, tokens: int, heads: int, weights: WeightsFn = real_weights):
        super().__init__()
        self.heads = heads
        self.mix = nn.ModuleList(weights(nn.Linear(tokens, tokens, bias=False)) for _ in range(heads))
        for m in self.mix:  # official init
            init_weight_(m, nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.unflatten(2, (self.heads, -1))  # [T, B, heads, g, N]
        return torch.stack([mix(groups[:, :, i]) for i, mix in enumerate(self.mix)], dim=2).flatten(2, 3)


class TokenMixer(nn.Module):
    """neuron -> Conv1d-BN -> neuron -> STM -> neuron -> Conv1d-BN."""

    def __init__(self, dim: int, tokens: int, heads: int, neuron: Callable[..., nn.Module],
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights):
        super().__init__()
        self.fc1 = nn.Sequential(neuron(), conv1d_bn(dim, dim, norm_layer=norm_layer, weights=weights), neuron())
        self.stm = STM(dim, tokens, heads, weights)
        # fc2's BN joins the block's shortcut: a residual branch (tdBN: 1/sqrt(2))
        self.fc2 = nn.Sequential(neuron(), conv1d_bn(dim, dim, norm_layer=norm_layer, residual=True, weights=weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.stm(self.fc1(x)))


class FFN(nn.Module):
    """neuron -> Conv1d(D -> rD)-BN -> neuron -> Conv1d(rD -> D)-BN."""

    def __init__(self, dim: int, hidden: int, neuron: Callable[..., nn.Module], norm_layer: NormLayer = batch_norm,
                 weights: WeightsFn = real_weights):
        super().__init__()
        self.fc1 = nn.Sequential(neuron(), conv1d_bn(dim, hidden, norm_layer=norm_layer, weights=weights))
        self.fc2 = nn.Sequential(neuron(), conv1d_bn(hidden, dim, norm_layer=norm_layer, residual=True,
                                                     weights=weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class Block(nn.Module):
    """Official ``Encoder``: x = x + TokenMixer(x); x = x + FFN(x)."""

    def __init__(self, dim: int, tokens: int, heads: int, mlp_ratio: float, neuron: Callable[..., nn.Module],
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights):
        super().__init__()
        self.token_mix = TokenMixer(dim, tokens, heads, neuron, norm_layer, weights)
        self.channel_mix = FFN(dim, int(dim * mlp_ratio), neuron, norm_layer, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mix(x)
        return x + self.channel_mix(x)


class STMixer(SpikingModel):
    """Patch embed -> ``depth`` blocks -> mean over tokens -> Linear, per time step.

    Taps: "patch_embed", "block1".."blockD" (``[T, B, D, N]``) and "features" (``[T, B, D]``), so
    ``logits == model.classifier(taps["features"])``. ``auxiliary_taps`` names the official SML attachment
    points (patch embed, blocks 2, 4, ..., depth - 2); ``num_heads`` is the token mixers' head count.

    ``norm_layer`` builds every BN; ``hidden_weights`` builds every Conv/Linear but the two patch-embed convs
    that read the image and the classifier, which keep real weights.
    """

    def __init__(self, *, neuron, input_shape, num_classes, dim=384, depth=10, heads=16, mlp_ratio=4.0,
                 downsample=None, norm_layer: NormLayer = batch_norm, hidden_weights: WeightsFn = real_weights):
        super().__init__(input_shape, num_classes)
        C, H, W = image_shape(input_shape, "STMixer")
        if downsample is None:  # the official demo: 2 at 32 px (8x8 tokens), 4 at 224 px (14x14 tokens)
            downsample = 2 if max(H, W) <= 64 else 4
        if downsample not in STRIDES:
            raise ModelConfigError(f"STMixer: downsample must be one of {sorted(STRIDES)} or null (auto); "
                                   f"got {downsample!r} (set model.downsample=...).")
        k = 2 ** downsample
        if H % k or W % k:
            raise ModelConfigError(f"STMixer with downsample={downsample} needs H and W divisible by {k} (the "
                                   f"shortcut conv and the stride-2 stem must give the same grid); got {H}x{W}.")
        if dim % 8 or dim % heads:
            raise ModelConfigError(f"STMixer: dim must be divisible by 8 and by heads; got dim={dim}, "
                                   f"heads={heads} (set model.dim / model.heads).")
        self.downsample = downsample
        self.tokens = (H // k) * (W // k)
        self.num_heads = heads
        # where the official demo attaches its surrogate modules (SML): the patch embed and every second block
        # before the last two (STMixerV3 with sml=True: depth // 2 branches)
        self.auxiliary_taps = ["patch_embed"] + [f"block{2 * i}" for i in range(1, depth // 2)]
        self.patch_embed = PatchEmbed(C, dim, downsample, neuron, norm_layer, hidden_weights)
        self.blocks = nn.ModuleList(Block(dim, self.tokens, heads, mlp_ratio, neuron, norm_layer, hidden_weights)
                                    for _ in range(depth))
        self.num_features = dim
        self.classifier = SeqToBatch(nn.Linear(dim, num_classes))

        for m in self.modules():  # official init: kaiming fan_out for every conv; BN 1, 0
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                init_weight_(m, nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.patch_embed(self.check_sequence(x))
        taps = self.new_taps()
        taps["patch_embed"] = x
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            taps[f"block{i}"] = x
        features = x.mean(dim=-1)
        taps["features"] = features
        return ModelOutput(logits=self.classifier(features), taps=taps)


@register_model("stmixer")
def stmixer(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, dim: int = 384,
            depth: int = 10, heads: int = 16, mlp_ratio: float = 4.0, downsample: int | None = None, norm: str = "bn",
            binary_weights: bool = False) -> STMixer:
    """STMixer; defaults are the official demo (CIFAR-100, 32 px, D 384, depth 10, 16 heads, ratio 4; trained
    at T 1).

    downsample: log2 of the patch size (2: 32 px -> 8x8 tokens; 4: 224 px -> 14x14); null picks 2 up to
    64 px and 4 above.
    """
    return STMixer(neuron=neuron, input_shape=input_shape, num_classes=num_classes, dim=dim, depth=depth,
                   heads=heads, mlp_ratio=mlp_ratio, downsample=downsample, norm_layer=make_norm_layer(norm, neuron),
                   hidden_weights=weights_for(binary_weights))


# The released ImageNet checkpoint "STMixer_8_768" (STMixer_demo README); heads and ratio as the demo's.
stmixer_imagenet_8_768 = register_variant(
    "stmixer_imagenet_8_768", stmixer, "STMixer 8-768 on ImageNet 224 px: depth 8, D 768, patch 16 (downsample 4, "
    "14x14 tokens); 16 heads and ratio 4 assumed from the demo.", dim=768, depth=8, downsample=4)
