"""Patch encoders for feature extraction: CLAM's truncated ResNet50, any timm model, a local file.

Nothing is ever downloaded. Without a checkpoint the weights are random but seeded, so a run
without weights is reproducible (useful for tests and for checking a pipeline end to end, useless
for science); a warning says so. Real weights come from a checkpoint file the user already has.

Names accepted by `load_encoder`:
- a name registered with `register_encoder` (``"attnmap:tiny"``: the small CNN in `attnmap.data`);
- ``"resnet50_trunc"``: torchvision ResNet50 up to ``layer3`` + global average pool → 1024-d,
  input resized to 224, ImageNet normalisation (CLAM's default recipe).
- ``"timm:NAME"``: ``timm.create_model(NAME, num_classes=0)``; input size, mean, std and
  interpolation from the model's data config.
- a path to a weights file (read by `attnmap.checkpoint`, weights only): a timm training checkpoint
  (``{"arch": ..., "state_dict": ...}``) or a torchvision ResNet50 state_dict;
- ``"torchscript:PATH"``: a TorchScript archive, loaded only when named so (it runs its own code);
  input resized to 224 (or ``input_size``) with ImageNet normalisation;
- ``"hf:FOLDER"``: a Hugging Face vision model saved with ``save_pretrained`` (Phikon, Phikon-v2,
  Hibou, DINOv3, PLIP...), its feature read-out named by the ``readout`` argument
  (`attnmap.wsi.hf_encoder`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from attnmap.checkpoint import (
    TORCHSCRIPT_PREFIX,
    apply_state_dict,
    load_state_dict,
    load_torchscript,
    read_checkpoint,
    unwrap_state_dict,
)
from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.timm_folder import resolve_timm_folder
from attnmap.wsi.hf_encoder import check_readout, hf_encoder, hf_folder

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("resnet50_trunc",)

# Encoders other modules provide by name (e.g. "attnmap:tiny", a small CNN shipped with weights):
# name -> factory() returning (model, transform, feature_dim) with its weights already loaded.
_REGISTRY: dict[str, Callable[[], tuple[nn.Module, Callable[[np.ndarray], torch.Tensor], int]]] = {}
# Modules imported on first use of an "attnmap:" name, so that their registrations run.
_PROVIDER_MODULES = ("attnmap.data.tiny_encoder", "attnmap.data.patch_vit")


def register_encoder(
    name: str, factory: Callable[[], tuple[nn.Module, Callable[[np.ndarray], torch.Tensor], int]]
) -> None:
    """Make ``load_encoder(name)`` call ``factory()`` (which returns model, transform, feature_dim)."""
    _REGISTRY[name] = factory


def _registered(name: str) -> Callable[[], tuple[nn.Module, Callable, int]] | None:
    if name not in _REGISTRY and name.startswith("attnmap:"):
        import importlib

        for module in _PROVIDER_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError:
                continue
    return _REGISTRY.get(name)


def registered_names() -> tuple[str, ...]:
    """Every registered encoder name (attnmap's own providers imported first)."""
    _registered("attnmap:")
    return tuple(_REGISTRY)


def known_encoder_name(name: str) -> bool:
    """Whether `load_encoder` knows ``name`` as a preset, a registered or a timm name, without
    building anything (so a misspelt name stops a run before any slide is touched)."""
    if name in PRESETS or _registered(name) is not None:
        return True
    if name.startswith("timm:"):
        import timm

        rest = name[len("timm:") :]
        return bool(rest) and (bool(timm.is_model(rest)) or Path(rest).is_dir())
    folder = hf_folder(name)
    return folder is not None and (folder / "config.json").is_file()


class Encoder(NamedTuple):
    """A patch encoder: ``model`` maps a transformed batch (B, 3, H, W) to (B, ``feature_dim``)."""

    model: nn.Module
    transform: Callable[[np.ndarray], torch.Tensor]
    feature_dim: int


class PatchTransform:
    """uint8 RGB patch (H, W, 3) → normalised float tensor (3, size, size).

    Resize only, no centre crop: a slide patch is the whole field of view, cropping would discard
    its borders (CLAM's evaluation transform also resizes without cropping). Picklable, so loader
    worker processes can use it.
    """

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str):
        self.size = int(size)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.interpolation = interpolation

    def __call__(self, patch: np.ndarray) -> torch.Tensor:
        from PIL import Image

        array = np.asarray(patch)
        if array.ndim != 3 or array.shape[2] < 3:
            raise InputError(f"a patch must be H×W×3 RGB, got shape {array.shape}")
        image = Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8, copy=False))
        if image.size != (self.size, self.size):
            # the encoder's own filter (a Hugging Face processor may name lanczos, box, ...)
            resample = getattr(Image.Resampling, self.interpolation.upper(), Image.Resampling.BILINEAR)
            image = image.resize((self.size, self.size), resample)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return ((tensor - mean) / std).contiguous()

    def __repr__(self) -> str:
        return f"PatchTransform(size={self.size}, mean={self.mean}, std={self.std}, {self.interpolation})"


class TruncatedResNet50(nn.Module):
    """torchvision ResNet50 stem + layer1..layer3, then global average pooling: (B, 1024)."""

    dropped_layers = ("layer4", "fc")  # in every full ResNet50 checkpoint; left out when loading

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        full = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)


def load_encoder(
    name_or_path: str | Path,
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    input_size: int | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Encoder:
    """Build a patch encoder (model in eval mode on ``device``, its transform, its output size).

    ``checkpoint``: weights for a named architecture, read and fitted by `attnmap.checkpoint` (the
    rule `attnmap.load_model` follows); the classifier head the encoder lacks is left out, any other
    mismatch is an error. ``input_size`` overrides the resize target. ``model_args``: arguments of
    a timm architecture (``timm.create_model``; layer classes by name, see `attnmap.vit.timm_build`).
    """
    name, model_args, checkpoint = resolve_timm_folder(str(name_or_path), model_args, checkpoint)
    _check_model_args(name, model_args)
    factory = _registered(name)
    if factory is not None:
        model, transform, feature_dim = factory()
        if checkpoint is not None:
            load_weights(model, checkpoint)
        if input_size is None or getattr(transform, "size", None) == input_size:
            return Encoder(model.eval().to(device), transform, int(feature_dim))
        if not isinstance(transform, PatchTransform):
            raise InputError(f"encoder {name!r} has a fixed transform: it takes no input_size")
        resized = PatchTransform(input_size, transform.mean, transform.std, transform.interpolation)
        return _finish(model, resized, device)  # checks that the model takes the new size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "resnet50_trunc" or name.startswith("timm:"):
            model, transform = _architecture(name, input_size, model_args)
        elif hf_folder(name) is not None:  # Hugging Face loads the folder's weights (or the checkpoint)
            return _finish(*_hf_architecture(name, input_size, model_args, checkpoint), device)
        elif name.startswith(TORCHSCRIPT_PREFIX):
            if checkpoint is not None:
                raise InputError("a TorchScript encoder carries its weights: give no checkpoint with it")
            transform = PatchTransform(input_size or 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
            return _finish(load_torchscript(name), transform, device)
        elif Path(name).is_file():
            if checkpoint is not None:
                raise InputError("give either an encoder file or a checkpoint for a named encoder, not both")
            return _encoder_from_file(
                Path(name), device=device, seed=seed, input_size=input_size, model_args=model_args
            )
        else:
            raise InputError(
                f"unknown encoder {name!r}: use one of {', '.join(PRESETS + tuple(_REGISTRY))}, "
                "'timm:MODEL_NAME', 'hf:FOLDER' or the path of an existing encoder file"
            )
    if checkpoint is None:
        logger.warning(
            "encoder %s has random (seeded) weights: give a checkpoint for meaningful features", name
        )
    else:
        load_weights(model, checkpoint)
    return _finish(model, transform, device)


def _check_model_args(name: str, model_args: Mapping[str, Any] | None) -> None:
    """Architecture arguments only where a timm architecture is built (a name or a file's ``arch``);
    an ``hf:`` encoder takes its read-out only."""
    if hf_folder(name) is not None:
        check_readout(dict(model_args or {}))
        return
    fixed = name == "resnet50_trunc" or name.startswith(TORCHSCRIPT_PREFIX) or _registered(name) is not None
    if model_args and fixed:
        raise InputError(
            f"encoder arguments ({', '.join(sorted(model_args))}) apply to timm architectures, "
            f"not to {name!r}"
        )


def _architecture(
    name: str, input_size: int | None, model_args: Mapping[str, Any] | None = None
) -> tuple[nn.Module, PatchTransform]:
    """The untrained model and transform of ``resnet50_trunc`` or ``timm:NAME``."""
    if name == "resnet50_trunc":
        transform = PatchTransform(input_size or 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
        return TruncatedResNet50(), transform
    return _timm_encoder(name[len("timm:") :], input_size, model_args)


def _hf_architecture(
    name: str, input_size: int | None, model_args: Mapping[str, Any] | None, checkpoint: str | Path | None
) -> tuple[nn.Module, PatchTransform]:
    model, size, mean, std, interpolation = hf_encoder(name, dict(model_args or {}), checkpoint, input_size)
    return model, PatchTransform(size, mean, std, interpolation)


def encoder_outline(
    name: str, input_size: int | None = None, model_args: Mapping[str, Any] | None = None
) -> Encoder:
    """The encoder ``name`` would be, without its weights: its model class and feature size.

    Why: a configuration is checked before any slide runs (features that fit the MIL model, an
    encoder the fine maps support), and that must not cost a second load of a large encoder. A
    preset or timm architecture is built on the meta device (no memory, no initialisation); a
    weights file is read to learn its architecture; registered and TorchScript encoders are
    loaded as they are. Raises `InputError` for an encoder that cannot work (e.g. ``input_size``).
    """
    name, model_args, _ = resolve_timm_folder(name, model_args, None)
    _check_model_args(name, model_args)
    factory = _registered(name)
    if factory is not None or name.startswith(TORCHSCRIPT_PREFIX):
        return load_encoder(name, input_size=input_size)
    if Path(name).is_file():
        name = _file_architecture(Path(name), read_checkpoint(name))
    if hf_folder(name) is not None:  # its outline would be its config; loading it says all at once
        return load_encoder(name, input_size=input_size, model_args=model_args)
    if name != "resnet50_trunc" and not name.startswith("timm:"):
        return load_encoder(name, input_size=input_size)  # the unknown name's own error
    try:
        with torch.device("meta"):
            model, transform = _architecture(name, input_size, model_args)
            return _finish(model, transform, "meta")
    except Exception:  # noqa: BLE001 - an operation without a meta kernel: the CPU build decides
        pass
    model, transform = _architecture(name, input_size, model_args)
    return _finish(model, transform, "cpu")


def _timm_encoder(
    model_name: str, input_size: int | None, model_args: Mapping[str, Any] | None = None
) -> tuple[nn.Module, PatchTransform]:
    from attnmap.vit.preprocess import data_config
    from attnmap.vit.timm_build import build_timm

    if not model_name:
        raise InputError("'timm:' must be followed by a timm model name, e.g. timm:resnet18")
    model_args = dict(model_args or {})
    if model_args.pop("num_classes", 0):  # 0, as a saved foundation model's config.json may say
        raise InputError("a patch encoder is headless (num_classes=0): give no num_classes encoder argument")
    model = build_timm(model_name, model_args, num_classes=0)
    config = data_config(model)  # the size the model was built for (img_size), as explain uses
    size = input_size or int(config["input_size"][-1])
    transform = PatchTransform(
        size, config["mean"], config["std"], str(config.get("interpolation", "bilinear"))
    )
    return model, transform


def _encoder_from_file(
    path: Path,
    *,
    device: str | torch.device,
    seed: int,
    input_size: int | None,
    model_args: Mapping[str, Any] | None = None,
) -> Encoder:
    """A weights file whose architecture can be told from its content (timm ``arch``, ResNet50 keys)."""
    name = _file_architecture(path, read_checkpoint(path))
    return load_encoder(name, path, device=device, seed=seed, input_size=input_size, model_args=model_args)


def _file_architecture(path: Path, payload: object) -> str:
    """The encoder name a weights file's content stands for (its timm ``arch``, ResNet50 keys)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("arch"), str):
        return f"timm:{payload['arch']}"
    state = unwrap_state_dict(payload, str(path))
    if "layer3.0.conv1.weight" in state and "conv1.weight" in state:
        return "resnet50_trunc"
    raise InputError(
        f"cannot tell which architecture {path} holds: pass the encoder name with the checkpoint "
        "(e.g. encoder 'timm:vit_small_patch16_224' and checkpoint PATH)"
    )


def load_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load ``checkpoint`` into ``model``; weights of layers the encoder drops (a classifier head,
    ``TruncatedResNet50.dropped_layers``) are left out, any other mismatch is an error."""
    apply_state_dict(model, load_state_dict(checkpoint), checkpoint, ignore_unexpected=True)


def _finish(model: nn.Module, transform: PatchTransform, device: str | torch.device) -> Encoder:
    """Eval mode on ``device``; the feature size is measured on one blank patch, which also checks
    that the model accepts the transform's input size."""
    model = model.eval().to(device)
    probe = torch.zeros(1, 3, transform.size, transform.size, device=device)
    try:
        with torch.inference_mode():
            output = model(probe)
    except (RuntimeError, AssertionError, ValueError) as error:
        raise UnsupportedModelError(
            f"the encoder fails on a {transform.size}×{transform.size} patch ({error}); check input_size"
        ) from error
    if isinstance(output, torch.Tensor) and output.ndim == 3:  # tokens: global_pool='' (Virchow's config)
        from attnmap.architecture_hints import spell_model_arguments

        pooled = spell_model_arguments({"global_pool": "class_and_patch_mean"})
        raise UnsupportedModelError(
            f"the encoder gives tokens {tuple(output.shape)}, not one feature vector per patch: name its "
            f"pooling, e.g. {pooled} (Virchow's class token ⊕ patch mean), or global_pool token or avg"
        )
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        raise UnsupportedModelError(
            f"the encoder must return a (batch, features) tensor, got {getattr(output, 'shape', output)!r}"
            ": use num_classes=0 or a pooled backbone"
        )
    return Encoder(model, transform, int(output.shape[1]))
