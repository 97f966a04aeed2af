"""The patch embedding as a chain of convolutions LRP can go through, read from the user's module.

Supported ``patch_embed.proj``: one ``Conv2d`` (a plain ViT), or an ``nn.Sequential`` of ``Conv2d`` /
``BatchNorm2d`` / ``ReLU`` layers ending in a ``Conv2d`` (``attnmap.vit.conv_stem.ConvPatchEmbed``).
BatchNorm (eval statistics) is folded into the convolution before it, ReLU passes relevance unchanged,
the first convolution uses the zᴮ rule (it sees the bounded input image) and later ones the z⁺ rule.
Anything else raises `UnsupportedModelError` naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.vit.lrp.rules import Stabiliser, conv_zbox, conv_zplus


@dataclass
class StemConv:
    """One convolution with any following BatchNorm folded in; ``relu`` if a ReLU follows."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    conv: dict
    relu: bool


def _conv_args(layer: nn.Conv2d, name: str) -> dict:
    if layer.padding == "valid":  # no padding, as Hugging Face writes it
        return {"stride": layer.stride, "padding": 0, "dilation": layer.dilation, "groups": layer.groups}
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise UnsupportedModelError(
            f"{name} (Conv2d with padding={layer.padding!r}, padding_mode={layer.padding_mode!r}) has no "
            "LRP rule here: only numeric zero padding is supported"
        )
    return {
        "stride": layer.stride,
        "padding": layer.padding,
        "dilation": layer.dilation,
        "groups": layer.groups,
    }


def _fold_batchnorm(conv: StemConv, bn: nn.BatchNorm2d, name: str) -> StemConv:
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModelError(
            f"{name} (BatchNorm2d without running statistics) cannot be folded for LRP"
        )
    scale = (bn.running_var.detach() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.detach()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.detach()
    return StemConv(conv.weight * scale.view(-1, 1, 1, 1), bias, conv.conv, conv.relu)


def read_stem(proj: nn.Module, name: str = "patch_embed.proj") -> list[StemConv]:
    """The stem's convolutions with BatchNorms folded (weights detached, the user's tensors untouched)."""
    layers = [(name, proj)] if isinstance(proj, nn.Conv2d) else None
    if isinstance(proj, nn.Sequential):
        layers = [(f"{name}.{child_name}", child) for child_name, child in proj.named_children()]
    if layers is None:
        raise UnsupportedModelError(
            f"{name} ({type(proj).__name__}) has no LRP rule: expected a Conv2d or an nn.Sequential of "
            "Conv2d/BatchNorm2d/ReLU layers"
        )
    convs: list[StemConv] = []
    for layer_name, layer in layers:
        if isinstance(layer, nn.Conv2d):
            bias = layer.bias.detach() if layer.bias is not None else None
            convs.append(StemConv(layer.weight.detach(), bias, _conv_args(layer, layer_name), relu=False))
        elif isinstance(layer, nn.BatchNorm2d) and convs and not convs[-1].relu:
            convs[-1] = _fold_batchnorm(convs[-1], layer, layer_name)
        elif isinstance(layer, nn.ReLU) and convs and not convs[-1].relu:
            convs[-1].relu = True
        elif isinstance(layer, (nn.Identity, nn.Dropout)):
            continue
        else:
            raise UnsupportedModelError(
                f"{layer_name} ({type(layer).__name__}) has no LRP rule in the patch embedding: "
                "supported are "
                "Conv2d, BatchNorm2d directly after a Conv2d, and ReLU"
            )
    if not convs or convs[-1].relu:
        raise UnsupportedModelError(f"{name} must end in a Conv2d (optionally followed by BatchNorm2d)")
    return convs


@dataclass
class StemTrace:
    """What the relevance pass needs from the stem's forward: each conv's input and pre-bias output."""

    inputs: list[torch.Tensor]
    pre_bias: list[torch.Tensor]


def stem_forward(convs: list[StemConv], images: torch.Tensor, record: bool) -> tuple[torch.Tensor, StemTrace]:
    """Run the folded stem (eval semantics); returns the (B, D, gh, gw) embedding and the trace."""
    trace = StemTrace([], [])
    x = images
    for conv in convs:
        z = F.conv2d(x, conv.weight, None, **conv.conv)
        if record:
            trace.inputs.append(x)
            trace.pre_bias.append(z)
        x = z if conv.bias is None else z + conv.bias.view(1, -1, 1, 1)
        if conv.relu:
            x = F.relu(x)
    return x, trace


def stem_relevance(
    convs: list[StemConv], trace: StemTrace, relevance: torch.Tensor, stab: Stabiliser
) -> torch.Tensor:
    """Relevance of the (B, D, gh, gw) embedding → the (B, C, H, W) input pixels (ReLU is identity)."""
    for index in range(len(convs) - 1, 0, -1):
        conv = convs[index]
        relevance = conv_zplus(
            relevance, trace.inputs[index], trace.pre_bias[index], conv.weight, conv.conv, stab
        )
    return conv_zbox(relevance, trace.inputs[0], convs[0].weight, convs[0].conv)
