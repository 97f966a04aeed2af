"""Timm models saved as folders (``config.json`` naming an ``architecture`` beside its weights), as
pathology foundation models ship on the Hugging Face Hub: read locally, never through the Hub."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from attnmap.errors import InputError


class TimmFolder(NamedTuple):
    """A timm model saved with its configuration: what `timm_folder` reads."""

    architecture: str
    model_args: dict[str, Any]
    weights: Path


# in the order timm's Hub loader prefers them; an index names the shards of a split checkpoint
TIMM_WEIGHT_FILES = (
    "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"
)


def timm_folder(path: str | Path) -> TimmFolder | None:
    """The architecture, model arguments and weights file of a folder saved the timm way, as
    pathology foundation models ship on the Hugging Face Hub (UNI, Virchow, H-optimus, GigaPath:
    ``config.json`` naming a timm ``"architecture"`` and its ``"model_args"``, beside
    ``model.safetensors`` or ``pytorch_model.bin``); None for anything else (a Hugging Face
    transformers folder has a ``model_type`` instead). Read here, never through the Hub."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {config_file}: {error}") from None
    if not isinstance(config, Mapping) or not isinstance(config.get("architecture"), str):
        return None
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, Mapping):
        raise InputError(f"{config_file}: model_args must be a mapping, got {type(model_args).__name__}")
    weights = next((folder / name for name in TIMM_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise InputError(
            f"{folder} holds a timm config.json but no model.safetensors or pytorch_model.bin "
            "(whole, or sharded with their .index.json)"
        )
    model_args = dict(model_args)
    preprocessing = config.get("pretrained_cfg")
    if isinstance(preprocessing, Mapping) and "pretrained_cfg_overlay" not in model_args:
        # the folder's own input size and normalisation (UNI: ImageNet's), as timm uses them when it
        # builds a Hub model: the architecture's defaults may differ
        overlay = {key: preprocessing[key] for key in _PREPROCESSING_KEYS if key in preprocessing}
        if overlay:
            model_args["pretrained_cfg_overlay"] = overlay
    return TimmFolder(config["architecture"], model_args, weights)


_PREPROCESSING_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def resolve_timm_folder(
    spec: str, model_args: Mapping[str, Any] | None, checkpoint: str | Path | None
) -> tuple[str, dict[str, Any], str | Path | None]:
    """``timm:FOLDER`` (or ``hf:FOLDER``) holding a timm config.json (`timm_folder`) as
    ``timm:ARCHITECTURE``, its saved model arguments under the given ones, and its weights file
    unless a checkpoint is given; any other spec as it is. A ``timm:`` folder without such a config
    is refused, unless timm has a model of that name (a folder that happens to bear it)."""
    args = dict(model_args or {})
    kind, _, name = spec.partition(":")
    if kind not in ("timm", "hf") or not Path(name).is_dir():
        return spec, args, checkpoint
    folder = timm_folder(name)
    if folder is None:
        import timm

        if kind == "timm" and not timm.is_model(name):
            config = Path(name) / "config.json"
            hf = config.is_file() and '"model_type"' in config.read_text(errors="replace")
            raise InputError(
                f"timm:{name} is a folder without a timm config.json naming an \"architecture\""
                + (": it holds a Hugging Face transformers model, given as hf:FOLDER" if hf else "")
            )
        return spec, args, checkpoint
    weights = folder.weights if checkpoint is None else checkpoint
    return f"timm:{folder.architecture}", {**folder.model_args, **args}, weights
