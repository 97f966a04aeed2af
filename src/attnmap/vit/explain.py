"""`explain`: the one call users make to get a map from a ViT."""

from __future__ import annotations

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.registry import Target, get_method


def explain(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "transformer_attribution",
    target: Target = None,
    **options: object,
) -> torch.Tensor:
    """Compute ``method``'s map for each image of the batch.

    ``images`` is (B, 3, H, W), preprocessed for the model (see `attnmap.vit.preprocess`).
    ``target`` is None (each image's predicted class), an int, or B ints.
    Returns (B, gh, gw) on the model's patch grid (prefix tokens excluded), or (B, H, W) for
    pixel-level methods such as "lrp". See `attnmap.methods()` for the list.
    """
    spec = get_method(method)
    allowed = spec.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise InputError(f"method {method!r} has no option {', '.join(unknown)}; its options: {known}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise InputError(f"images must be floating point, got {images.dtype}")
    return spec.fn(model, images, target, **options)
