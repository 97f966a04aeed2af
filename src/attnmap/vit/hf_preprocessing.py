"""A Hugging Face image processor's ``preprocessor_config.json`` as a timm-style data config.

Why: attnmap preprocesses with timm's transforms (``explain``) or its own patch transform (slide
encoders), both taking pixels scaled to 0..1 and a (mean, std) pair; a Hugging Face folder states
its preprocessing as its image processor's JSON. Everything that processor does to the numbers
(resize rule, crop, rescale factor, normalisation) is read here, so a folder's model sees the
values its own processor would give it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnmap.errors import InputError

# PIL's codes, as HF stores them
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _side(value: Any, default: int) -> tuple[int, int] | None:
    """(height, width) of an HF size entry; None for {"shortest_edge": n} (a shorter-side resize)."""
    if isinstance(value, Mapping):
        if "height" in value:
            return int(value["height"]), int(value.get("width", value["height"]))
        return None
    return (int(value), int(value)) if value is not None else (default, default)


def hf_data_config(processor: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """timm-style data config from a Hugging Face image processor's JSON: the size the model gets
    (the crop when the processor centre-crops), the resize rule (an exact (h, w) resize is timm's
    "squash"; a shorter-side resize then crop is "center" with crop_pct = crop / resize), the
    resampling filter and the normalisation."""
    image_size = config.image_size if isinstance(config.image_size, int) else int(config.image_size[0])
    size = processor.get("size", image_size)
    resized = _side(size, image_size)
    shortest = int(size.get("shortest_edge", image_size)) if isinstance(size, Mapping) else None
    crop = _side(processor.get("crop_size"), image_size) if processor.get("crop_size") is not None else None
    centre = bool(processor.get("do_center_crop", crop is not None)) and crop is not None
    if centre:
        height, width = crop
        side = shortest if resized is None else min(resized)
        mode, crop_pct = "center", min(1.0, min(height, width) / max(1, side))
    elif resized is not None:
        (height, width), mode, crop_pct = resized, "squash", 1.0
    else:  # shorter side resized, no crop: the model gets that size's square centre
        height = width = int(shortest)
        mode, crop_pct = "center", 1.0
    channels = int(getattr(config, "num_channels", 3))
    mean, std = _hf_normalisation(processor, channels)
    return {
        "input_size": (channels, int(height), int(width)),
        "mean": mean,
        "std": std,
        "interpolation": _RESAMPLE.get(processor.get("resample", 2), "bilinear"),
        "crop_pct": crop_pct,
        "crop_mode": mode,
    }


def _hf_normalisation(
    processor: Mapping[str, Any], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on pixels scaled to 0..1 (timm's and attnmap's convention) that give what the
    image processor gives: it multiplies 0..255 pixels by ``rescale_factor`` (when ``do_rescale``)
    and then normalises by ``image_mean`` / ``image_std`` (when ``do_normalize``), so a processor
    rescaling by another factor than 1/255, not rescaling, or not normalising is folded into the
    pair rather than silently read as ImageNet-style 0..1 statistics. A single mean or std (a
    number) holds for every channel."""

    def per_channel(key: str, default: float) -> tuple[float, ...]:
        value = processor.get(key, default)
        if isinstance(value, (int, float)):
            value = [value]
        values = list(value or [default])
        if len(values) == 1:
            values *= channels
        if len(values) != channels or not all(isinstance(v, (int, float)) for v in values):
            raise InputError(f"preprocessor_config.json: {key} must be {channels} numbers, got {value!r}")
        return tuple(float(v) for v in values)

    rescale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0
    if not rescale > 0:
        raise InputError(f"preprocessor_config.json: rescale_factor must be positive, got {rescale}")
    if processor.get("do_normalize", True):
        mean, std = per_channel("image_mean", 0.5), per_channel("image_std", 0.5)
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    if not all(value > 0 for value in std):
        raise InputError(f"preprocessor_config.json: image_std must be positive, got {list(std)}")
    unit = 255.0 * rescale  # processor value = (x · unit − mean) / std for x = pixel / 255
    return tuple(m / unit for m in mean), tuple(s / unit for s in std)


_PROCESSOR_KEYS = ("size", "crop_size", "do_center_crop", "resample", "rescale_factor", "do_rescale",
                   "do_normalize", "image_mean", "image_std")


def read_preprocessing(folder: Path, config: Any) -> dict[str, Any] | None:
    """The data config of the folder's ``preprocessor_config.json`` (None without one). Entries the
    JSON leaves out take the defaults of the image processor class it names, as that processor
    does when it loads the folder (a BitImageProcessor without ``resample`` is bicubic with
    OpenAI's mean, not bilinear with 0.5)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    if not isinstance(saved, Mapping):
        raise InputError(f"{path} must hold a JSON object, got {type(saved).__name__}")
    try:
        return hf_data_config({**_class_defaults(saved), **saved}, config)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: unreadable preprocessing ({error})") from None


def _class_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing defaults of the image processor class ``saved`` names; {} when
    transformers has no such class or it cannot be built without arguments."""
    name = saved.get("image_processor_type")
    try:
        import transformers

        from attnmap.vit.models import _quiet_transformers

        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        if cls is None:
            return {}
        with _quiet_transformers():  # a deprecated "...Fast" name logs a notice
            defaults = cls().to_dict()
    except Exception:  # noqa: BLE001 - no defaults: the JSON's own entries and ours decide
        return {}
    return {key: defaults[key] for key in _PROCESSOR_KEYS if defaults.get(key) is not None}
