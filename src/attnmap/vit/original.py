"""Where the model's input came from in the original image, where a patch map lies on that input,
and the model's prediction for a batch.

Why trace coordinates through the transform: timm's eval transform (resize, centre crop, maybe
padding) differs per model; rather than re-deriving each rule, the same pixel steps are applied
to two float images holding each pixel's x and y. Resizing interpolates a linear ramp exactly, so
the result gives, for every input pixel, its position in the original: the crop box.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnmap.class_lookup import class_index as lookup_class
from attnmap.errors import InputError


def crop_box(
    model: nn.Module, size: tuple[int, int], config: Mapping[str, Any] | None = None
) -> tuple[float, ...]:
    """(x0, y0, x1, y1) in original pixels of what the model sees, for an original of ``size`` (w, h)."""
    from timm.data import create_transform

    from attnmap.vit.preprocess import _split_transform, data_config

    width, height = size
    resolved = dict(config) if config is not None else data_config(model)
    to_pixels, _ = _split_transform(create_transform(**resolved, is_training=False))
    ramps = []
    for axis in (0, 1):
        ramp = np.indices((height, width), dtype=np.float32)[1 - axis] + 0.5
        picture = Image.fromarray(ramp, mode="F")
        for step in to_pixels:
            picture = step(picture)
        ramps.append(np.asarray(picture, dtype=np.float64))
    xs, ys = ramps
    if xs.ndim != 2 or xs.shape[1] < 2 or xs.shape[0] < 2:
        raise InputError("cannot trace the model's preprocessing back to the original image")
    # pixel centres: first at x0 + step/2, last at x1 - step/2 (linear along each axis)
    row, col = xs[xs.shape[0] // 2], ys[:, ys.shape[1] // 2]
    step_x = (row[-1] - row[0]) / (len(row) - 1)
    step_y = (col[-1] - col[0]) / (len(col) - 1)
    return (row[0] - step_x / 2, col[0] - step_y / 2, row[-1] + step_x / 2, col[-1] + step_y / 2)


def class_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """(B, classes) logits of a preprocessed batch, or None for a headless model (an embedding or
    tokens out: nothing to predict).

    No grad, the model in eval mode (as the maps are computed; its training flags are restored); a
    Hugging Face model gets ``pixel_values`` (interpolating positions for another input size); a
    distilled DeiT's two heads are averaged.
    """
    from attnmap.model_state import eval_mode
    from attnmap.vit.adapters import adapter_for, call_model, unwrap
    from attnmap.vit.targets import output_tensor

    model = unwrap(model)
    adapter = adapter_for(model)
    if not adapter.classifier:
        return None
    with eval_mode(model), torch.no_grad():
        output = call_model(model, images)
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[1], torch.Tensor):
        logits = (output[0] + output[1]) / 2
    else:
        logits = output_tensor(output)
    return logits if logits.ndim == 2 else None


def predict(model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """(predicted class indices (B,), their softmax probabilities (B,)) for a preprocessed batch, or
    None for a headless model (see `class_logits`)."""
    logits = class_logits(model, images)
    if logits is None:
        return None
    probs = torch.softmax(logits.float(), dim=-1)
    best = probs.argmax(-1)
    return best.cpu().numpy(), probs.gather(-1, best[:, None])[:, 0].cpu().numpy()


def class_names(model: nn.Module) -> list[str]:
    """The model's class names by index (timm ``label_names``, HF ``id2label`` unless only
    ``LABEL_k`` placeholders), or an empty list."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names:
        return [str(name) for name in names]
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    labels = {int(key): str(value) for key, value in id2label.items() if not str(value).startswith("LABEL_")}
    if not labels:  # HF's LABEL_k placeholders name nothing
        return []
    return [labels.get(index, f"class {index}") for index in range(max(map(int, id2label)) + 1)]


def class_index(model: nn.Module, name: str) -> int:
    """The index of the class called ``name`` (`attnmap.class_lookup.class_index`: the rule
    `mil attention` follows too); `InputError` when the model names no classes."""
    names = class_names(model)
    if not names:
        raise InputError(
            f"target {name!r}: {type(model).__name__} names no classes (no label_names / id2label); "
            + ("it is headless (no class scores): give a direction (attnmap explain: --direction FILE.npy)"
               if _headless(model) else "give the class index")
        )
    return lookup_class(name, names)


def _headless(model: nn.Module) -> bool:
    """Whether the model outputs no class scores (an embedding or tokens), as `class_logits` says;
    False when its layout is not one attnmap reads (the explanation then says what is wrong)."""
    from attnmap.vit.adapters import adapter_for, unwrap

    try:
        return not adapter_for(unwrap(model)).classifier
    except InputError:
        return False


def named_classes(model: nn.Module, target: Any) -> Any:
    """``target`` with a class name, or each name of a list, as its class index (`class_index`)."""
    if isinstance(target, str):
        return class_index(model, target)
    if isinstance(target, (list, tuple)) and any(isinstance(item, str) for item in target):
        return [class_index(model, item) if isinstance(item, str) else item for item in target]
    return target


def class_name(model: nn.Module, index: int) -> str:
    """The class's name where the model knows it (`class_names`), else ``class N``."""
    names = class_names(model)
    return names[index] if 0 <= index < len(names) else f"class {index}"


def on_input_pixels(model: nn.Module | None, heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch map of a model that pads its input to whole patches, on the input's own pixels: its
    last row and column of patches reach past the image, so it is upsampled to the padded size and
    cut to the image (stretched over the image, every patch would be drawn off its place). Any other
    map as it is."""
    if model is None or heat.shape == tuple(size):
        return heat
    from attnmap.render.upsample import upsample
    from attnmap.vit.adapters import adapter_for

    covered = adapter_for(model).pixels_covered(*size)
    if covered == tuple(size) or covered[0] < size[0] or covered[1] < size[1]:
        return heat
    return upsample(heat, covered)[: size[0], : size[1]]


def seen_pixels(model: nn.Module | None, size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the part of an input of ``size`` that the model sees: all of it, unless it drops
    the pixels past its last whole patch (a Hugging Face ViT): then its top-left whole patches."""
    if model is None:
        return tuple(size)
    from attnmap.vit.adapters import adapter_for

    covered = adapter_for(model).pixels_covered(*size)
    return min(covered[0], size[0]), min(covered[1], size[1])
