"""Loading the model to explain from a short spec, never downloading anything.

Specs: ``timm:NAME`` (architecture from timm, random weights unless a checkpoint is given;
``timm:FOLDER`` a timm model saved with its ``config.json``, see `timm_folder`),
``hf:LOCAL_DIR`` (a Hugging Face model of a supported family saved with ``save_pretrained``: the class
named in its config), and
``attnmap:NAME`` (models shipped with attnmap, see `BUNDLED_MODELS`). Checkpoints may be a raw
state_dict, ``{"state_dict": ...}``, ``{"model": ...}``, a DINO ``{"teacher": ...}`` or a
``.safetensors`` file, read and fitted by `attnmap.checkpoint` (weights only; the model found under
a prefix such as ``backbone.``; timm's own conversions, e.g. position embeddings resampled to the
model's grid). Key mismatches are errors, because a silently half-loaded model would explain nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnmap.checkpoint import apply_state_dict, fit_state_dict, load_state_dict
from attnmap.devices import resolve_device
from attnmap.errors import InputError
from attnmap.vit.hf_preprocessing import read_preprocessing
from attnmap.vit.timm_build import build_timm
from attnmap.vit.timm_folder import TimmFolder, resolve_timm_folder, timm_folder

__all__ = [
    "BUNDLED_MODELS",
    "TimmFolder",
    "apply_state_dict",
    "load_model",
    "load_state_dict",
    "timm_folder",
]

# name -> "module:function"; the function takes no arguments and returns an eval-mode model
BUNDLED_MODELS: dict[str, str] = {
    "shapes-vit": "attnmap.data.shapes_model:load_shapes_vit",
    "patch-vit": "attnmap.data.patch_vit:patch_vit_model",  # headless: explained along a direction
}


def load_model(
    spec: str,
    checkpoint: str | Path | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    **model_kwargs: Any,
) -> nn.Module:
    """An eval-mode model on ``device`` from ``spec`` ("timm:NAME", "hf:LOCAL_DIR", "attnmap:NAME").

    ``device``: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available); a device this machine
    lacks is an `InputError`. ``checkpoint``: a weights file or folder, or a state_dict in memory.
    For timm, ``num_classes`` defaults to the checkpoint's head size when
    a checkpoint is given (0, a headless encoder, when it has no classifier; a headless model leaves
    a checkpoint's classifier out); ``model_kwargs`` go to ``timm.create_model`` (e.g. ``depth=4``,
    ``img_size=64``; layer classes by name: ``mlp_layer="SwiGLUPacked"``, ``act_layer="silu"``, see
    `attnmap.vit.timm_build`). ``num_classes`` for a bundled ``attnmap:`` model is refused.
    """
    if not isinstance(spec, str):  # a Path to a weights folder, or a model, failed with AttributeError
        shown = repr(str(spec)) if isinstance(spec, Path) else type(spec).__name__  # a model's repr is long
        raise InputError(
            f"model spec must be a string like timm:NAME, hf:LOCAL_DIR or attnmap:NAME, got {shown}"
        )
    kind, _, name = spec.partition(":")
    if not name:
        raise InputError(f"model spec {spec!r} must look like timm:NAME, hf:LOCAL_DIR or attnmap:NAME")
    _check_kind(kind, spec)  # before the arguments are judged by it
    # a timm model saved with its config (foundation models on the Hub): its architecture and files
    spec, model_kwargs, checkpoint = resolve_timm_folder(spec, model_kwargs, checkpoint)
    kind, _, name = spec.partition(":")
    target_device = resolve_device(device)  # checked before anything is read or built
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike, Mapping)):
        raise InputError(
            f"checkpoint must be a path (str or Path) or a state_dict, got {type(checkpoint).__name__}"
        )
    for given in (num_classes, model_kwargs.get("num_classes")):
        if given is not None and (
            isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 0
        ):
            raise InputError(f"num_classes must be a whole number >= 0 (0: headless), got {given!r}")
    if num_classes is not None:
        num_classes = int(num_classes)
    if num_classes is not None and kind == "attnmap":
        raise InputError(
            f"num_classes applies to timm and hf: models, not to the bundled {spec!r}, which has its classes"
        )
    if model_kwargs and kind != "timm":
        raise InputError(
            f"model arguments ({', '.join(sorted(model_kwargs))}) apply to timm models, not to {spec!r}"
        )
    state = load_state_dict(checkpoint, scripted_ok=False) if checkpoint is not None else None
    # what messages call the checkpoint: its path, never a state_dict's repr (kilobytes of tensors)
    source = "(a state_dict in memory)" if isinstance(checkpoint, Mapping) else str(checkpoint)
    headless = False
    if kind == "timm":
        model = _timm_model(name, state, num_classes, model_kwargs, source)
        headless = state is not None and getattr(model, "num_classes", None) == 0
    elif kind == "hf":  # Hugging Face loads the checkpoint itself: it knows its saved key names
        model, state = _hf_model(name, num_classes, state, source), None
    else:
        model = _bundled_model(name)
    if state is not None:  # a headless timm model leaves the checkpoint's classifier out
        apply_state_dict(model, state, source, ignore_unexpected=headless)
    return model.to(target_device).eval()


_KINDS = ("timm", "hf", "attnmap")


def _check_kind(kind: str, spec: str) -> None:
    if kind not in _KINDS:
        case = f" (kinds are lower case: {kind.lower()}:NAME)" if kind.lower() in _KINDS else ""
        raise InputError(
            f"unknown model kind {kind!r} in {spec!r}; use timm:NAME, hf:LOCAL_DIR or attnmap:NAME{case}"
        )


def _timm_model(
    name: str,
    state: Mapping[str, torch.Tensor] | None,
    num_classes: int | None,
    kwargs: dict[str, Any],
    source: str,
) -> nn.Module:
    """The timm model; without ``num_classes``, the checkpoint's classifier decides its size, and a
    checkpoint without one (an SSL or foundation-model encoder) gives a headless model (a random
    head would make maps of nothing)."""
    kwargs = dict(kwargs)
    if num_classes is None:  # also given as a model argument (--model-arg num_classes=0)
        num_classes = kwargs.pop("num_classes", None)
    if num_classes is None and state is not None:
        try:
            with torch.device("meta"):  # only its key names and shapes: no memory, no initialisation
                outline = build_timm(name, kwargs)
        except InputError:  # an initialisation step without a meta kernel: the CPU build decides
            outline = build_timm(name, kwargs)
        num_classes = _classifier_size(outline, fit_state_dict(outline, state, source))
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    return build_timm(name, kwargs)


def _classifier_size(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """Rows of the checkpoint's classifier weight (timm's ``pretrained_cfg["classifier"]``), 0 when
    the checkpoint has none."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    for name in (names,) if isinstance(names, str) else tuple(names):
        weight = state.get(f"{name}.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim >= 1:
            return int(weight.shape[0])
    return 0


# a full image-text model saved in the directory: the vision tower attnmap explains
_HF_VISION_TOWERS = {
    "clip": "CLIPVisionModelWithProjection",
    "siglip": "SiglipVisionModel",
    "metaclip_2": "MetaClip2VisionModelWithProjection",
}


def _vit_mae_recipe(path: Path, transformers: Any, config: Mapping[str, Any], names: list[str]) -> str:
    """What to run for a ViT-MAE folder: its encoder's weights are a ViT's (the MAE itself shuffles
    and drops patch tokens at random), so a ViT config of its sizes with its weights file explains it."""
    shared = transformers.ViTConfig().to_dict().keys() - {"architectures", "transformers_version"}
    skip = {"model_type", "_name_or_path"}
    vit = {"model_type": "vit", **{k: v for k, v in config.items() if k in shared and k not in skip}}
    files = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    files += ("pytorch_model.bin.index.json",)
    checkpoint = next((path / name for name in files if (path / name).is_file()), path / files[0])
    preprocessor = ""
    if (path / "preprocessor_config.json").is_file():
        preprocessor = " (with this folder's preprocessor_config.json)"
    return (
        f"hf:{path} holds a vit_mae ({', '.join(names) or 'no architectures'}), which shuffles and drops its "
        f"patch tokens at random (mask_ratio); its encoder's weights load into a ViT: save as config.json "
        f"{json.dumps(vit, sort_keys=True)} in a new folder{preprocessor} and give --model hf:NEW_FOLDER "
        f"--checkpoint {checkpoint} (load_model('hf:NEW_FOLDER', checkpoint=...) in Python)"
    )


def _hf_model(
    directory: str,
    num_classes: int | None,
    state: Mapping[str, torch.Tensor] | None = None,
    source: str = "",
) -> nn.Module:
    """The model class the directory was saved from (its config's ``architectures``), weights checked.

    Any supported family (see `attnmap.vit.adapters_hf.HF_MODEL_TYPES`, `SAME_LAYERS`); a full
    CLIP/SigLIP/MetaCLIP 2 model gives its vision tower, their image classifiers the whole classifier.
    ``state`` (a checkpoint given beside the folder) replaces the folder's weights, read by
    transformers so that both its saved and its in-memory key names load (the latter also from under
    a prefix, by `attnmap.checkpoint.fit_state_dict`). Missing or mis-shaped weights are an error (a
    silently half-random model would explain nothing), except
    a classifier head replaced for ``num_classes``.
    """
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise InputError(f"hf:{directory} is not a local Hugging Face model directory (no config.json)")
    try:
        import transformers
    except ImportError:
        raise InputError("hf: models need the 'transformers' package (pip install attnmap[hf])") from None
    from attnmap.vit.adapters_hf import HF_MODEL_TYPES, SAME_LAYERS

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read hf:{directory}/config.json: {error}") from None
    kind = str(config.get("model_type", ""))
    readable = SAME_LAYERS.get(kind, kind) in HF_MODEL_TYPES or kind in _HF_VISION_TOWERS
    names = [str(name) for name in config.get("architectures") or []]
    # a full image-text model gives its vision tower; its image classifier (SiglipForImageClassification,
    # CLIPForImageClassification: the tower and a head) is explained whole
    tower = kind in _HF_VISION_TOWERS and not (names and names[0].endswith("ForImageClassification"))
    name = (_HF_VISION_TOWERS[kind] if tower else None) or (names[0] if names else _hf_base_class(kind))
    cls = getattr(transformers, name, None) if name else None
    if cls is None and name and readable:
        # the folder's own modelling code (config.json's auto_map): never run here
        raise InputError(
            f"hf:{directory}: its config.json names {name}, a class transformers {transformers.__version__} "
            "does not have (custom code is never run): save the model as a transformers class"
        )
    if kind == "vit_mae":
        raise InputError(_vit_mae_recipe(path, transformers, config, names))
    if not readable or cls is None:
        raise InputError(
            f"hf:{directory} holds a {kind or 'model'} ({', '.join(names) or 'no architectures'}); "
            f"attnmap explains the model types {', '.join([*HF_MODEL_TYPES, *SAME_LAYERS])} and the "
            f"image-text folders {', '.join(_HF_VISION_TOWERS)} (their vision tower or image classifier)"
        )
    extra: dict[str, Any] = {}
    if num_classes is not None:
        if "ForImageClassification" not in cls.__name__:
            raise InputError(f"num_classes applies to image classifiers, not to {cls.__name__}")
        extra = {"num_labels": num_classes}
    where = f"hf:{directory}" + (f" with checkpoint {source}" if state is not None else "")
    try:
        with _quiet_transformers():
            if tower or state is not None:
                extra["config"] = _hf_config(transformers, path, tower)
            if num_classes is not None and "config" in extra:
                extra["config"].num_labels = extra.pop("num_labels")
            if state is not None:  # the model found under a prefix (a Lightning module's backbone.)
                with torch.device("meta"):
                    outline = cls(extra["config"])
                state = fit_state_dict(outline, state, source)
            def load(**options: Any) -> tuple[nn.Module, dict]:
                return cls.from_pretrained(
                    None if state is not None else str(path),
                    local_files_only=True,
                    output_loading_info=True,
                    ignore_mismatched_sizes=True,  # reported below, naming the keys
                    **({"state_dict": dict(state)} if state is not None else {}),
                    **extra,
                    **options,
                )

            model, info = load()
            missing = info.get("missing_keys") or []
            if missing and all(key.startswith("pooler.") for key in missing) and _takes_pooler_option(cls):
                # saved without its pooler (Phikon): the model as saved, not a random pooler
                model, info = load(add_pooling_layer=False)
    except Exception as error:  # noqa: BLE001 - any failure to read the saved files is the user's
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot load {where} as {cls.__name__}: {first}") from None
    _check_hf_loading(
        info, cls.__name__, where, replaced_head=num_classes is not None, tower=tower
    )
    if any(weight.dtype in (torch.float16, torch.bfloat16) for weight in model.parameters()):
        # saved in half precision (transformers >= 5 keeps the saved dtype): computed in float32, as
        # a timm model is; half precision is a choice of the run (features.precision), not the file's
        model = model.float()
    preprocessing = read_preprocessing(path, model.config)
    if preprocessing is not None:
        model.pretrained_cfg = preprocessing
    return model


def _hf_base_class(kind: str) -> str | None:
    """The base model class transformers' AutoModel builds for ``kind``: the class of a config
    written without ``architectures`` (by hand, or from ``AutoConfig``)."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    except ImportError:  # pragma: no cover - a transformers without the mapping
        return None
    name = MODEL_MAPPING_NAMES.get(kind)
    return name if isinstance(name, str) else None


def _takes_pooler_option(cls: type) -> bool:
    """Whether the model class can be built without its pooler (ViTModel, DeiTModel, BeitModel)."""
    import inspect

    return "add_pooling_layer" in inspect.signature(cls.__init__).parameters


def _hf_config(transformers: Any, path: Path, tower: bool) -> Any:
    """The folder's config; for a full image-text model its vision tower's, with the pair's
    projection size."""
    full = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    if not tower:
        return full
    vision = full.vision_config
    if getattr(full, "projection_dim", None) is not None:
        vision.projection_dim = full.projection_dim
    return vision


def _check_hf_loading(
    info: Mapping[str, Any], name: str, where: str, *, replaced_head: bool, tower: bool = False
) -> None:
    """One line for the weights transformers could not fill: missing ones, and mis-shaped ones
    (which it re-initialises at random), except the classifier replaced for ``num_classes``; and for
    saved weights the model has no place for (transformers drops them): a folder whose weights hold
    more than its class builds (DINOv2 register tokens under a plain ``Dinov2Model``, custom code
    the folder's ``auto_map`` names) would give another model's features. A full image-text
    model's other tower (``tower``) is expected to be left out."""

    def kept(key: str) -> bool:
        return not (replaced_head and "classifier" in key)

    def vision(key: str) -> bool:
        return not tower or key.startswith(("vision_model.", "visual_projection."))


    missing = sorted(key for key in info.get("missing_keys", []) if kept(key))
    mis_shaped = sorted(
        f"{item[0]} {tuple(item[1])} vs {tuple(item[2])}"
        for item in info.get("mismatched_keys", [])
        if kept(str(item[0]))
    )
    if missing:
        raise InputError(
            f"{where}: {len(missing)} weights of {name} are not in the saved files "
            f"(e.g. {missing[0]}); the model would be partly random"
        )
    if mis_shaped:
        more = f", ... ({len(mis_shaped)} in all)" if len(mis_shaped) > 3 else ""
        raise InputError(
            f"{where}: the saved weights do not fit {name} as its config builds it: "
            f"wrong shape: {', '.join(mis_shaped[:3])}{more}"
        )
    unused = sorted(key for key in map(str, info.get("unexpected_keys", [])) if kept(key) and vision(key))
    if unused:
        raise InputError(
            f"{where}: {len(unused)} saved weights have no place in {name} as its config builds it "
            f"(e.g. {unused[0]}); the model would not be the one saved"
        )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load report and progress bars off: unused weights of a full image-text model
    (its text tower) are expected, and every real problem is raised as one line."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _bundled_model(name: str) -> nn.Module:
    target = BUNDLED_MODELS.get(name)
    if target is None:
        raise InputError(f"unknown bundled model {name!r}; available: {', '.join(sorted(BUNDLED_MODELS))}")
    module_name, _, function_name = target.partition(":")
    try:
        loader = getattr(importlib.import_module(module_name), function_name)
    except (ModuleNotFoundError, AttributeError) as error:
        raise InputError(
            f"bundled model {name!r} is not available in this installation ({target}: {error})"
        ) from None
    model = loader()
    if not isinstance(model, nn.Module):
        raise InputError(f"bundled model {name!r}: {target} returned {type(model).__name__}, not a model")
    return model
