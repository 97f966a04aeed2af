"""Conservative pixel relevance of a piecewise-linear (ReLU) CNN encoder for a feature direction.

Why: CLAM's ``resnet50_trunc`` and the shipped ``attnmap:tiny`` are the encoders many slide models
were trained on, and their fine maps need no approximation. A network made of convolutions,
BatchNorm in eval mode (affine), ReLU, max / average pooling and linear layers is piecewise linear:
with the ReLU gates and the max-pool winners held at their values for the patch ``p`` it is the
affine map ``f̃(q) = J q + f̃(0)`` that equals ``f`` at ``p``. LRP-0 on a ReLU network is exactly
gradient × input (the max-pool routes relevance to its winner, as the gradient does), so

    R = p ⊙ Jᵀ d,        Σ_pixels R + d · f̃(0) = d · f(p),   d · f̃(0) = d · f(p) − Σ R.

The pixel layer keeps LRP-0 even when the input range is known: the zB rule through a padded,
overlapping stem convolution (ResNet's 7×7, stride 2) would hand relevance to the zero padding and
lose conservation. Only modules whose forward is known to be such a composition are accepted;
anything else (a sigmoid, a squeeze-excitation gate, BatchNorm in training mode) is refused by name.
"""

from __future__ import annotations

import torch
from torch import nn

# leaves that are affine or piecewise linear in eval mode
_LEAVES = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)
# containers whose forward composes their children with additions, flattening and affine steps only
_CONTAINERS = {
    "torch.nn.modules.container.Sequential",
    "torchvision.models.resnet.ResNet",
    "torchvision.models.resnet.BasicBlock",
    "torchvision.models.resnet.Bottleneck",
    "timm.models.resnet.ResNet",
    "timm.models.resnet.BasicBlock",
    "timm.models.resnet.Bottleneck",
    "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d",
    "attnmap.wsi.encoders.TruncatedResNet50",
    "attnmap.data.tiny_encoder.TinyPatchEncoder",  # ReLU convolutions, then a fixed standardisation
}


def cnn_refusal(model: nn.Module) -> str | None:
    """None when ``model`` is a piecewise-linear CNN this module covers, else why not (one line; empty
    when ``model`` itself is no network this module knows)."""
    if _qualified(model) not in _CONTAINERS:
        return ""
    for name, module in model.named_modules():
        label = f"{name or 'the model'} ({type(module).__name__})"
        if list(module.children()):
            if _qualified(module) not in _CONTAINERS:
                return f"{label} has a forward the piecewise-linear rule does not know"
        elif not isinstance(module, _LEAVES):
            return f"layer {label} has no piecewise-linear rule here"
        elif isinstance(module, nn.BatchNorm2d) and module.training:
            return f"layer {label} is in training mode (batch statistics): call .eval()"
    return None


def _qualified(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def cnn_relevance(
    model: nn.Module, images: torch.Tensor, direction: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixels (B, H, W), bias share (B,), score d · f(p) (B,)) of a `cnn_refusal`-checked model."""
    inputs = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        features = model(inputs)
        if direction.shape != features.shape:
            from attnmap.errors import InputError

            raise InputError(
                f"direction must be {tuple(features.shape)} (one per image), got {tuple(direction.shape)}"
            )
        score = (features * direction).sum(dim=1)
        (gradient,) = torch.autograd.grad(score.sum(), inputs)
    pixels = (gradient * inputs.detach()).sum(dim=1)
    score = score.detach()
    return pixels, score - pixels.sum(dim=(1, 2)), score
