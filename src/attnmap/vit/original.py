"""Where the model's input came from in the original image, and the model's prediction for a batch.

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
    from attnmap.vit.adapters import adapter_for, call_model, eval_mode, unwrap
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


def class_name(model: nn.Module, index: int) -> str:
    """The class's name where the model knows it (timm label_names, HF id2label), else ``class N``."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and 0 <= index < len(names):
        return str(names[index])
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    label = id2label.get(index, id2label.get(str(index)))
    return str(label) if label and not str(label).startswith("LABEL_") else f"class {index}"
