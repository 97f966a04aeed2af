"""`ConvPatchEmbed`: a small convolutional stem that keeps the ViT's patch grid.

A plain linear patch embedding learns slowly from few images; stride-2 convolutions (with a few
stride-1 "context" convolutions before the last one, widening each token's view to about 31 px)
learn edges and corners first and still hand the transformer one token per ``patch_size`` square,
so every patch-level explanation keeps its meaning. The stem is deliberately made of only ``Conv2d``,
``BatchNorm2d`` and ``ReLU`` layers inside ``proj`` (an ``nn.Sequential``): full LRP propagates
through exactly these kinds (zᴮ at the first convolution, z⁺ after, ReLU as identity, BatchNorm
folded into the preceding convolution).
"""

from __future__ import annotations

from collections.abc import Callable

from timm.layers import PatchEmbed
from torch import nn

from attnmap.errors import InputError


class ConvPatchEmbed(PatchEmbed):
    """timm ``PatchEmbed`` whose ``proj`` is conv-BN-ReLU stages of stride 2 ending in a conv to embed_dim.

    ``patch_size`` must be a power of two ≥ 4: log2(patch_size) stride-2 stages, with
    ``context_convs`` stride-1 conv-BN-ReLU layers before the last stage, which is a plain
    convolution to ``embed_dim``. Channel widths double from ``stem_width`` up to embed_dim.
    Accepts timm's PatchEmbed keyword arguments so ``VisionTransformer(embed_layer=ConvPatchEmbed)``
    can build it.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] | None = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[..., nn.Module] | None = None,
        flatten: bool = True,
        output_fmt: str | None = None,
        bias: bool = True,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        stem_width: int = 24,
        context_convs: int = 2,
        **factory_kwargs: object,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer,
            flatten=flatten,
            output_fmt=output_fmt,
            bias=bias,
            strict_img_size=strict_img_size,
            dynamic_img_pad=dynamic_img_pad,
            **factory_kwargs,
        )
        patch_h, patch_w = self.patch_size
        stages = patch_h.bit_length() - 1
        if patch_h != patch_w or patch_h < 4 or patch_h != 1 << stages:
            raise InputError(
                f"ConvPatchEmbed needs a square power-of-two patch size >= 4, got {self.patch_size}"
            )
        layers: list[nn.Module] = []
        width_in = in_chans
        for stage in range(stages - 1):
            width_out = min(stem_width * 2**stage, embed_dim)
            layers += _conv_bn_relu(width_in, width_out, stride=2)
            width_in = width_out
        for _ in range(context_convs):
            layers += _conv_bn_relu(width_in, width_in, stride=1)
        layers.append(nn.Conv2d(width_in, embed_dim, kernel_size=3, stride=2, padding=1, bias=bias))
        self.proj = nn.Sequential(*layers)


def _conv_bn_relu(width_in: int, width_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(width_in, width_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(width_out),
        nn.ReLU(inplace=False),
    ]
