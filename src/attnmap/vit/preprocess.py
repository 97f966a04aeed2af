"""Image files → the tensor a model expects, plus the RGB picture the model actually sees.

Preprocessing comes from the model's own pretrained config (timm's ``resolve_data_config`` +
``create_transform``), so users never type normalisation constants and a map is always computed on
the image exactly as the model was trained to see it. The same resize/crop is applied to the RGB
image returned for overlays, so a heatmap lands on the pixels it describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnmap.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor")
# ViTImageProcessor's defaults: what a Hugging Face ViT without a preprocessor config expects
_HF_DEFAULT_MEAN = (0.5, 0.5, 0.5)
_HF_DEFAULT_STD = (0.5, 0.5, 0.5)

ImageInput = str | Path | Image.Image | np.ndarray


def load_image(path: str | Path) -> Image.Image:
    """Read a PNG/JPEG/TIFF file as an RGB PIL image (16-bit and float TIFFs are rescaled to 8 bits)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            return Image.fromarray(_to_rgb_uint8(tifffile.imread(path, key=0), path))
        except (ValueError, OSError, TypeError, IndexError, tifffile.TiffFileError):
            pass  # not a TIFF tifffile can read: let PIL try and report
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I", "F"):
                return Image.fromarray(_to_rgb_uint8(np.asarray(image), path))
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image {path}: {error}") from None


def _to_rgb_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) or (3, H, W) of any numeric dtype → (H, W, 3) uint8."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"cannot read image {path}: unsupported array shape {array.shape}")
    array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = np.iinfo(array.dtype).max
        return (array.astype(np.float64) / top * 255.0 + 0.5).astype(np.uint8)
    values = np.nan_to_num(array.astype(np.float64))
    if values.max(initial=0.0) > 1.0:  # float image stored on 0..255
        values = values / 255.0
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def data_config(model: nn.Module) -> dict[str, Any]:
    """The model's preprocessing: input size, interpolation, mean/std, crop (timm's format)."""
    from timm.data import resolve_data_config

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == "vit" and not getattr(model, "pretrained_cfg", None):
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return {
            "input_size": (3, size, size),
            "interpolation": "bilinear",
            "mean": _HF_DEFAULT_MEAN,
            "std": _HF_DEFAULT_STD,
            "crop_pct": 1.0,
            "crop_mode": "center",
        }
    resolved = dict(resolve_data_config({}, model=model))
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None and not getattr(model, "dynamic_img_size", False):
        # a model built with another img_size than its pretrained config's must get that size
        resolved["input_size"] = (resolved["input_size"][0], int(img_size[0]), int(img_size[1]))
    return resolved


def _split_transform(transform: Any) -> tuple[list[Any], list[Any]]:
    """(steps on the PIL image: resize, crop, ...) and (to-tensor, normalise, ...)."""
    steps = list(getattr(transform, "transforms", [transform]))
    for index, step in enumerate(steps):
        if type(step).__name__ in _TENSOR_STEPS:
            return steps[:index], steps[index:]
    raise InputError(f"cannot find the to-tensor step in the model's transform {transform!r}")


def _as_pil(item: ImageInput) -> Image.Image:
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        return Image.fromarray(_to_rgb_uint8(item, Path("<array>")))
    raise InputError(f"expected an image path, PIL image or array, got {type(item).__name__}")


def preprocess(
    model: nn.Module,
    images: ImageInput | Sequence[ImageInput],
    config: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Images (paths, PIL images or arrays) → ((B, 3, H, W) tensor for ``model``, RGB views).

    The tensor has the model's parameter dtype and device. The second value holds, per image, the
    (H, W, 3) uint8 RGB image after resize and crop, before normalisation: what the model sees.
    ``config`` overrides the model's data config (timm keys: input_size, mean, std, crop_pct, ...).
    """
    from timm.data import create_transform

    items = [images] if isinstance(images, (str, Path, Image.Image, np.ndarray)) else list(images)
    if not items:
        raise InputError("no images given")
    resolved = dict(config) if config is not None else data_config(model)
    to_pixels, to_tensor = _split_transform(create_transform(**resolved, is_training=False))
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    tensors, views = [], []
    for item in items:
        picture = _as_pil(item)
        for step in to_pixels:
            picture = step(picture)
        views.append(np.asarray(picture.convert("RGB"), dtype=np.uint8).copy())
        tensor = picture
        for step in to_tensor:
            tensor = step(tensor)
        tensors.append(tensor)
    shapes = {tuple(tensor.shape) for tensor in tensors}
    if len(shapes) > 1:
        raise InputError(f"preprocessed images differ in size {sorted(shapes)}; preprocess them separately")
    return torch.stack(tensors).to(device=device, dtype=dtype), views
