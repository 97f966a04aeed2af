"""`explain`: the one call users make to get a map from a ViT.

It runs the same under ``torch.no_grad()``, ``torch.inference_mode()`` or neither: inference mode
is left for the call (an inference-mode image or direction is cloned into a normal tensor), the
methods enable gradients where they need them, and the parameters' ``requires_grad`` flags are
switched off for the pass (an explanation needs d(score)/dA, never weight gradients: this skips
every weight-gradient computation) and restored afterwards. A map that comes out all zero or
constant carries no information; it is returned (the batch keeps its shape) but reported with a
`FlatMapWarning` naming the image and the method.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.adapters import unwrap
from attnmap.vit.original import named_classes
from attnmap.vit.readout import ReadoutDirection, reading_rows_of
from attnmap.vit.registry import Method, get_method
from attnmap.vit.targets import Target


class FlatMapWarning(UserWarning):
    """A map came out all zero or constant: it shows nothing about the image."""


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter for the block; each flag restored exactly after."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


def _normal_tensor(value: object) -> object:
    if isinstance(value, torch.Tensor) and value.is_inference():
        return value.clone()
    return value


def explain(
    model: nn.Module,
    images: torch.Tensor,
    method: str = "transformer_attribution",
    target: Target = None,
    **options: object,
) -> torch.Tensor:
    """Compute ``method``'s map for each image of the batch.

    ``images`` is (B, 3, H, W), preprocessed for the model (see `attnmap.vit.preprocess`).
    ``target`` (see `attnmap.vit.targets`): None (each image's predicted class; a headless model
    needs a target for gradient and LRP methods), an int or B ints (classes; a class name, or B,
    where the model names its classes), a float tensor (D,)
    or (B, D) (a direction in the output space: score ⟨output, d⟩), or a callable
    ``f(output) -> (B,)`` scores.
    Returns (B, gh, gw) on the model's patch grid (prefix tokens excluded), or (B, H, W) for
    pixel-level methods such as "lrp". See `attnmap.methods()` for the list. A model padding its
    input to whole patches (timm ``dynamic_img_pad``) has ceil(H / patch) × ceil(W / patch) patches:
    its last row and column reach past the image, so place the grid on the padded size, not (H, W);
    any other drops the pixels past its last whole patch (a Hugging Face ViT at any size, a timm
    one whose img_size is no multiple of its patch): its grid covers the top-left
    floor(H / patch) × floor(W / patch) patches.
    """
    if isinstance(method, (list, tuple, set, frozenset)) or method == "all":
        # the command line takes several names or "all"; here a list failed as an unhashable key
        shown = method if isinstance(method, str) else sorted(map(str, method))
        raise InputError(
            f"explain takes one method name per call, got {shown!r}: call it once per name "
            "(attnmap.methods() lists them)"
        )
    spec = get_method(method)
    allowed = spec.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise InputError(f"method {method!r} has no option {', '.join(unknown)}; its options: {known}")
    check_option_types(method, allowed, options)
    options = {k: v.item() if isinstance(v, np.generic) else v for k, v in options.items()}  # np.int64(1)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if images.shape[0] == 0:  # checked here for every method: the LRP twin failed on it in a reshape
        raise InputError("got an empty batch (0 images)")
    if not images.is_floating_point():
        raise InputError(f"images must be floating point, got {images.dtype}")
    if images.is_meta:  # torch's own message came from the finiteness check: 'Tensor.item() ...'
        raise InputError("images are on the meta device: they hold no values; give the image tensors")
    if not torch.isfinite(images.detach()).all():
        raise InputError("images contain NaN or infinite values")
    model = unwrap(model)  # torch.compile / DataParallel: the model inside
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(parameter.is_meta for parameter in model.parameters()):
        raise InputError(
            "the model's weights are on the meta device: it was built without values (torch.device('meta')); "
            "load its weights first (model.to_empty(device=...) and load_state_dict, or attnmap.load_model)"
        )
    target = named_classes(model, target)
    with torch.inference_mode(False), frozen_parameters(model):
        images = _normal_tensor(images)
        target = _normal_tensor(target)
        if isinstance(target, ReadoutDirection):  # needs the model's prefix-token count
            target = target.bound(model)
        with reading_rows_of(target):
            maps = spec.fn(model, images, target, **options)
    check_maps(spec, maps, images)
    warn_flat_maps(maps, method)
    return maps


def check_option_types(method: str, allowed: dict[str, object], options: dict[str, object]) -> None:
    """Refuse an option whose value is not of its default's kind (int, float, str or bool), naming it.

    Why: a string "1" from a config file or 1.5 for a layer failed deep inside with a TypeError.
    Options whose default is None or another object are left to the method.
    """
    kinds = {bool: (bool, np.bool_), int: (int, np.integer), float: (int, float, np.integer, np.floating),
             str: (str,)}
    words = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    for name, value in options.items():
        default = allowed[name]
        accepted = kinds.get(type(default))
        if accepted is None:
            continue
        wrong = not isinstance(value, accepted) or (type(default) is not bool and isinstance(value, bool))
        if wrong:
            known = ", ".join(f"{k}={v!r}" for k, v in allowed.items())
            raise InputError(
                f"method {method!r}: option {name} must be {words[type(default)]} like its default "
                f"{default!r}, got {value!r}; its options: {known}"
            )


def check_maps(spec: Method, maps: object, images: torch.Tensor) -> None:
    """Refuse what a method returned unless it is (B, gh, gw) patch maps, or (B, H, W) for a method
    registered with ``output="pixels"``.

    Why: a user method's numpy array or None failed with an AttributeError, and maps of another
    batch size or shape were passed on as the images' maps."""
    what = f"method {spec.name!r} (output={spec.output!r})"
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"{what} returned a {type(maps).__name__}, not a tensor of maps")
    batch, height, width = images.shape[0], *images.shape[-2:]
    shape = tuple(maps.shape)
    if spec.output == "pixels" and shape != (batch, height, width):
        raise InputError(
            f"{what} returned {shape} for {batch} images of {height}×{width}: it must return "
            f"(B, H, W) = {(batch, height, width)}"
        )
    if maps.ndim != 3 or shape[0] != batch:
        raise InputError(f"{what} returned {shape} for {batch} images: it must return (B, gh, gw) maps")


def warn_flat_maps(maps: torch.Tensor, method: str, names: Sequence[str] | None = None) -> None:
    """`FlatMapWarning` for each image whose map is all zero or constant (up to round-off), named
    by ``names`` (its file, say) or else by its position in the batch."""
    flat = maps.detach().reshape(maps.shape[0], -1)
    if not flat.is_floating_point():
        return
    high, low = flat.amax(dim=1), flat.amin(dim=1)
    scale = torch.maximum(high.abs(), low.abs())
    eps = torch.finfo(flat.dtype).eps
    for index in torch.nonzero((high - low) <= 8 * eps * scale, as_tuple=False).flatten().tolist():
        what = "all zero" if scale[index] == 0 else "constant"
        warnings.warn(
            f"attnmap: the {method} map of {f'image {index}' if names is None else names[index]} is {what}: "
            "it shows nothing about the image",
            FlatMapWarning,
            stacklevel=3,
        )
