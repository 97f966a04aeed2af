"""Image files → the tensor a model expects, plus the RGB picture the model actually sees.

Preprocessing comes from the model's own pretrained config (timm's ``resolve_data_config`` +
``create_transform``), so users never type normalisation constants and a map is always computed on
the image exactly as the model was trained to see it. The same resize/crop is applied to the RGB
image returned for overlays, so a heatmap lands on the pixels it describes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.orientation import exif_orientation, upright
from attnmap.vit.tiff_image import read_tiff_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif")
_TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor")
# Preprocessing of a Hugging Face model without a preprocessor config, per model_type, as the image
# processor of the family's released checkpoints does it: normalisation (ViT, BEiT, SigLIP: 0.5;
# DeiT, DINOv2/3: ImageNet; CLIP: OpenAI's), resampling filter, and resize rule: "squash" resizes
# to the exact input size (ViT, BEiT, SigLIP, DINOv3), "center" resizes the shorter side to
# input / crop_pct and centre-crops (CLIP 1.0; DeiT and DINOv2 256 → 224). timm's defaults (ImageNet,
# its own crop) would be silently wrong for several.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_HF_PREPROCESSING: dict[str, tuple[tuple[tuple[float, ...], tuple[float, ...]], str, str, float]] = {
    "vit": (_HALF, "bilinear", "squash", 1.0),
    "beit": (_HALF, "bicubic", "squash", 1.0),
    "siglip_vision_model": (_HALF, "bicubic", "squash", 1.0),
    "deit": (_IMAGENET, "bicubic", "center", 224 / 256),
    "dinov2": (_IMAGENET, "bicubic", "center", 224 / 256),
    "dinov2_with_registers": (_IMAGENET, "bicubic", "center", 224 / 256),
    "dinov3_vit": (_IMAGENET, "bilinear", "squash", 1.0),
    "clip_vision_model": (_OPENAI_CLIP, "bicubic", "center", 1.0),
}
_DINOV2_INPUT = 224  # DINOv2's processor crops 224 although its positions are for image_size=518

ImageInput = str | Path | Image.Image | np.ndarray


class FirstFrameWarning(UserWarning):
    """An animated image (GIF, WebP, APNG) was given: only one frame is explained (a file's first;
    a PIL image's current one, where the caller's ``seek`` left it)."""


def _warn_if_animated(image: Image.Image, name: object) -> None:
    # MPO (a camera JPEG with a preview or depth picture after it) is one photo: its first frame
    if getattr(image, "is_animated", False) and image.format != "MPO":
        frames, current = getattr(image, "n_frames", "several"), image.tell()
        which = "its first frame" if current == 0 else f"frame {current + 1} (the current one)"
        warnings.warn(
            f"attnmap: {name} is animated ({frames} frames); only {which} is explained",
            FirstFrameWarning,
            stacklevel=4,
        )


def load_image(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Read a PNG/JPEG/TIFF/WebP/BMP/GIF file as an RGB PIL image (16-bit, signed and float images
    rescaled to 8 bits), upright: turned as its EXIF Orientation says, as
    ``PIL.ImageOps.exif_transpose`` shows it. An animated GIF/WebP/PNG gives its first frame, with
    a `FirstFrameWarning`.

    ``min_side``: the image may come back smaller, its shorter side still at least ``min_side``
    pixels, so a photo far larger than the model's input never sits in memory at full size: JPEGs
    are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), a pyramidal TIFF is read from its
    smallest sufficient level and decoded a band at a time, other images are box-reduced right
    after decoding. Images over PIL's decompression-bomb limit (2 × ``Image.MAX_IMAGE_PIXELS``)
    are refused, TIFFs included.
    """
    if not isinstance(path, (str, os.PathLike)):  # a PIL image or an array: preprocess takes those
        raise InputError(
            f"load_image reads an image file: path must be a str or Path, got {type(path).__name__} "
            "(attnmap.preprocess takes PIL images and arrays)"
        )
    if min_side is not None and (
        isinstance(min_side, bool) or not isinstance(min_side, (int, np.integer)) or min_side < 1
    ):
        raise InputError(f"min_side must be a whole number of pixels >= 1, got {min_side!r}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"cannot read image {path}: the file is empty")
    if path.suffix.lower() in (".tif", ".tiff"):
        read = read_tiff_rgb(path, min_side, _to_rgb_uint8)
        if read is not None:
            if read[2] > 1:  # a z-stack, time series or channels as pages: said, as for an animation
                warnings.warn(
                    f"attnmap: {path} holds {read[2]} images (pages); only its first is explained",
                    FirstFrameWarning,
                    stacklevel=2,
                )
            return upright(Image.fromarray(read[0]), read[1])
    try:
        with Image.open(path) as image:
            _warn_if_animated(image, path)
            if min_side is not None:
                width, height = image.size
                scale = min_side / max(1, min(width, height))
                image.draft("RGB", (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
            image.load()
            orientation = exif_orientation(image)
            if image.mode in _WIDE_MODES:
                return upright(_reduce(_pil_rgb(image, path), min_side), orientation)
            # reduced first: no full-size RGB copy; turned last, on the fewest pixels
            return upright(_reduce(image, min_side).convert("RGB"), orientation)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image {path}: {error}") from None


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _pil_rgb(image: Image.Image, path: Path) -> Image.Image:
    """An RGB PIL image; 16-bit, 32-bit and float images rescaled as `_to_rgb_uint8` does (PIL's own
    ``convert("RGB")`` clips them at 255: a 16-bit image comes out white)."""
    if image.mode in _WIDE_MODES:
        return Image.fromarray(_to_rgb_uint8(np.asarray(image), path))
    return image.convert("RGB")


def _reduce(image: Image.Image, min_side: int | None) -> Image.Image:
    """``image`` box-reduced by the largest whole factor that keeps its shorter side >= ``min_side``."""
    if min_side is None:
        return image
    factor = min(image.size) // min_side
    return image.reduce(factor) if factor >= 2 else image


def _to_rgb_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) or (3, H, W) of any numeric dtype → (H, W, 3) uint8; 2 samples are
    grey + alpha (a TIFF's LA), 4 are RGB + alpha: the alpha is dropped, as PIL's convert does.

    Converted a band of rows at a time, so a large 16-bit or float image needs no full-size
    float64 copy (what dominated the memory of reading one)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"cannot read image {path}: unsupported array shape {array.shape}")
    array = array[..., :1] if array.shape[-1] == 2 else array[..., :3]
    output = np.empty(array.shape[:2] + (3,), dtype=np.uint8)
    band = max(1, (1 << 22) // max(1, array.shape[1] * array.shape[2]))  # ~4 M values per band
    if array.dtype == np.uint8:
        output[:] = array  # one channel is broadcast to three
        return output
    low, high = _display_range(array, band, path)
    span = high - low
    for start in range(0, array.shape[0], band):
        values = array[start : start + band].astype(np.float64)
        values = np.clip(np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low, 0.0, span)
        output[start : start + band] = (values / (span or 1.0) * 255.0 + 0.5).astype(np.uint8)
    return output


def _display_range(array: np.ndarray, band: int, path: Path) -> tuple[float, float]:
    """The sample values shown as black and white: the type's range for unsigned integers and
    booleans; 0..1 or 0..255 for float data within them; otherwise (signed integers, floats beyond
    0..255 or below 0) the data's own finite range, as image viewers show such data: clipping it
    at 0 turned a signed or negative image black, and a negative int cast to uint8 wrapped round.
    Read a band at a time (no full-size float64 copy)."""
    if array.dtype == bool:
        return 0.0, 1.0
    if np.issubdtype(array.dtype, np.unsignedinteger):
        return 0.0, float(np.iinfo(array.dtype).max)
    low, high = np.inf, -np.inf
    for start in range(0, array.shape[0], band):
        rows = array[start : start + band]
        finite = rows[np.isfinite(rows)] if not np.issubdtype(rows.dtype, np.integer) else rows
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:
        raise InputError(f"cannot read image {path}: it holds no finite pixel values (all NaN or infinite)")
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 255.0:
        return 0.0, 1.0 if high <= 1.0 else 255.0
    return low, high


def data_config(model: nn.Module) -> dict[str, Any]:
    """The model's preprocessing: input size, interpolation, mean/std, crop (timm's format)."""
    from timm.data import resolve_data_config

    from attnmap.vit.adapters import unwrap

    model = unwrap(model)
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind is not None:  # an image-text family's image classifier is preprocessed as its tower
        from attnmap.vit.adapters_hf import layout

        kind, config = layout(model)
    if kind in _HF_PREPROCESSING and not getattr(model, "pretrained_cfg", None):
        size = config.image_size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if kind.startswith("dinov2"):
            height, width = min(height, _DINOV2_INPUT), min(width, _DINOV2_INPUT)
        (mean, std), interpolation, crop_mode, crop_pct = _HF_PREPROCESSING[kind]
        return {
            "input_size": (int(getattr(config, "num_channels", 3)), height, width),
            "interpolation": interpolation,
            "mean": mean,
            "std": std,
            "crop_pct": crop_pct,
            "crop_mode": crop_mode,
        }
    resolved = dict(resolve_data_config({}, model=model))
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None and not getattr(model, "dynamic_img_size", False):
        # a model built with another img_size than its pretrained config's must get that size
        resolved["input_size"] = (resolved["input_size"][0], int(img_size[0]), int(img_size[1]))
    return resolved


def _model_channels(model: nn.Module, resolved: Mapping[str, Any]) -> int:
    """Channels of the model's input: its first patch-embedding convolution (timm), its config's
    ``num_channels`` (Hugging Face), else the data config's ``input_size``."""
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(patch_embed, nn.Module):
        first = next((m for m in patch_embed.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None:
            return int(first.in_channels)
    channels = getattr(getattr(model, "config", None), "num_channels", None)
    if isinstance(channels, int):
        return channels
    return int(tuple(resolved.get("input_size", (3,)))[0])


def _patch_side(model: nn.Module) -> int | None:
    """Pixels a side of one patch token at the model's input (timm: input size over grid size, so a
    CNN stem's stride counts; NaFlexVit: its embedding's patch size; Hugging Face: the config's
    ``patch_size``); None when unknown."""
    patch_embed = getattr(model, "patch_embed", None)
    img_size, grid = getattr(patch_embed, "img_size", None), getattr(patch_embed, "grid_size", None)
    try:
        if img_size is not None and grid is not None:
            return max(int(img_size[0]) // int(grid[0]), int(img_size[1]) // int(grid[1]))
        size = getattr(getattr(model, "embeds", None), "patch_size", None)
        if size is None:
            size = getattr(getattr(model, "config", None), "patch_size", None)
        return int(size if isinstance(size, int) else max(size)) if size is not None else None
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def _split_transform(transform: Any) -> tuple[list[Any], list[Any]]:
    """(steps on the PIL image: resize, crop, ...) and (to-tensor, normalise, ...)."""
    steps = list(getattr(transform, "transforms", [transform]))
    for index, step in enumerate(steps):
        if type(step).__name__ in _TENSOR_STEPS:
            return steps[:index], steps[index:]
    raise InputError(f"cannot find the to-tensor step in the model's transform {transform!r}")


def _decode_side(config: Mapping[str, Any]) -> int:
    """Shorter side worth decoding for a model resizing to ``input_size / crop_pct`` (timm's eval
    transform): twice that, so the final resize still averages several source pixels per pixel."""
    size = config.get("input_size", (3, 224, 224))
    if isinstance(size, (int, np.integer)):  # one side, as timm's create_transform takes it
        height = width = int(size)
    else:
        height, width = (int(value) for value in tuple(size)[-2:])
    crop_pct = float(config.get("crop_pct") or 1.0)
    return 2 * int(np.ceil(max(height, width) / crop_pct))


def _as_pil(item: ImageInput, min_side: int | None = None) -> Image.Image:
    if isinstance(item, (str, Path)):
        return load_image(item, min_side)
    if isinstance(item, Image.Image):  # upright as a file is: exif_transpose's output has no tag left
        _warn_if_animated(item, "the PIL image")
        return upright(_pil_rgb(item, Path("<PIL image>")), exif_orientation(item))
    if isinstance(item, np.ndarray):
        return Image.fromarray(_to_rgb_uint8(item, Path("<array>")))
    raise InputError(f"expected an image path, PIL image or array, got {type(item).__name__}")


def preprocess(
    model: nn.Module,
    images: ImageInput | Sequence[ImageInput],
    config: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Images (paths, PIL images or arrays) → ((B, C, H, W) tensor for ``model``, RGB views).

    C is 3 (RGB), or 1 for a model taking one channel (grayscale, e.g. timm ``in_chans=1``).

    The tensor has the model's parameter dtype and device. The second value holds, per image, the
    (H, W, 3) uint8 RGB image after resize and crop, before normalisation: what the model sees.
    ``config`` overrides the model's data config (timm keys: input_size, mean, std, crop_pct, ...).
    Files and PIL images are turned upright by their EXIF Orientation, as
    ``PIL.ImageOps.exif_transpose`` does (its output carries no tag, so it is not turned twice; a PIL
    image turned by hand still carries the tag PIL copied: drop it or use exif_transpose). Images
    smaller than one patch of the model are refused.
    """
    from timm.data import create_transform

    from attnmap.vit.adapters import unwrap

    model = unwrap(model)
    if not isinstance(model, nn.Module):  # a spec string: AttributeError on .parameters() below
        raise InputError(
            f"model must be a torch.nn.Module (e.g. from attnmap.load_model), got {type(model).__name__}"
        )
    if isinstance(images, (str, Path, Image.Image, np.ndarray)):
        items = [images]
    elif isinstance(images, Iterable):
        items = list(images)
    else:
        kind = type(images).__name__
        raise InputError(f"expected an image (path, PIL image, array) or a list of them, got {kind}")
    if not items:
        raise InputError("no images given")
    resolved = dict(config) if config is not None else data_config(model)
    channels = _model_channels(model, resolved)
    if channels == 1:  # a grayscale model: luminance, normalised by the mean of per-colour values
        for key in ("mean", "std"):
            values = tuple(resolved.get(key) or ())
            if len(values) > 1:
                resolved[key] = (float(np.mean(values)),)
    elif channels != 3:
        raise InputError(
            f"the model takes {channels}-channel images; preprocess makes RGB or grayscale tensors, "
            f"so build the {channels}-channel tensor yourself"
        )
    try:
        transform = create_transform(**resolved, is_training=False)
    except (TypeError, ValueError) as error:  # a key timm does not take, an int input_size, ...
        raise InputError(f"preprocess config {resolved} is not one timm can use: {error}") from None
    to_pixels, to_tensor = _split_transform(transform)
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    tensors, views = [], []
    patch = _patch_side(model)
    for index, item in enumerate(items):
        picture = _as_pil(item, _decode_side(resolved))
        if patch is not None and min(picture.size) < patch:
            name = item if isinstance(item, (str, Path)) else f"image {index}"
            raise InputError(
                f"{name} is {picture.width}×{picture.height} pixels, smaller than one {patch}×{patch} "
                "patch of the model: a map of it would only show the upsampling"
            )
        if channels == 1:
            picture = picture.convert("L")
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
