"""Every model file a user hands to attnmap is read here, the same safe way, with the same errors.

Why one module: a checkpoint is untrusted input. ``torch.load`` runs pickled code unless
``weights_only=True``; TorchScript archives run their own code by design. So files are read with
``weights_only=True`` (or as ``.safetensors``, which holds tensors only), TorchScript is loaded only
when the user asks for it by name (``torchscript:PATH``), and every failure is one `InputError` line
naming the file and the problem, never torch's advice to switch ``weights_only`` off.

- `read_checkpoint`: the file's content (a ``.safetensors`` dict, or what a weights-only
  ``torch.load`` returns; a shard index's shards as one dict, see `attnmap.checkpoint_files`).
- `load_state_dict`: a flat ``{name: tensor}`` dict, unwrapping ``{"state_dict"|"model"|
  "model_state_dict"|"module"|"teacher"|"target_encoder": ...}`` (an EMA copy when alone) and
  whole-model ``module.`` (DataParallel) / ``model.`` (Lightning-style wrapper) key prefixes, all in
  one place.
- `fit_state_dict`: the part that is the model (the prefix such as ``backbone.`` under which its
  keys are; a DINO teacher before its student), through timm's own checkpoint filter for a timm
  model (position embeddings resampled to its grid, as timm loads pretrained weights).
- `apply_state_dict` / `check_state_dict`: strict loading of that part, missing / unexpected /
  wrong-shape keys in one message; only a headless timm model's classifier or layers a model
  declares in ``dropped_layers`` may be left out.
- `load_torchscript`: the explicit TorchScript path.
- `cached_model` and the ``cached_*`` loaders (in `attnmap.model_cache`, importable from here):
  the per-process cache of loaded models.
"""

from __future__ import annotations

import itertools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnmap.checkpoint_files import (
    check_readable_kind,
    existing_file,
    is_shard_index,
    metadata_globals,
    read_sharded,
    torch_load_reason,
)
from attnmap.checkpoint_keys import joined_qkv, unchunked_blocks, without_decoder
from attnmap.errors import InputError

TORCHSCRIPT_PREFIX = "torchscript:"
# in this order: an EMA copy (timm's state_dict_ema, DeiT's model_ema) only when the file holds no other
# I-JEPA's target_encoder beside its encoder: the copy its evaluation uses
WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "model", "module", "teacher", "target_encoder", "state_dict_ema",
    "model_ema",
)
# a tie between copies of the network: the one its method evaluates (DINO's teacher, MoCo v3's base
# encoder, which its linear probe and weight conversion take, I-JEPA's target encoder)
EVALUATION_COPIES = ("teacher", "base_encoder", "target_encoder")
WRAPPER_PREFIXES = ("module.", "model.")
_NOT_SCRIPTED = (
    "a TorchScript model cannot be explained (its layers are compiled code); "
    "give the model's state_dict (torch.save(model.state_dict(), PATH))"
)


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(name.endswith("/constants.pkl") for name in names) and any("/code/" in n for n in names)


def read_checkpoint(path: str | Path, *, scripted_ok: bool = True, lazy: bool = False) -> Any:
    """The content of a ``.safetensors`` file or of a torch file loaded with ``weights_only=True``.

    ``scripted_ok=False``: the caller cannot use a TorchScript model at all (a ViT to explain needs
    its Python modules), so the message says to give its state_dict instead of ``torchscript:``.
    ``lazy``: a torch file's tensors are memory-mapped, read only when used, so checking a large
    checkpoint's key names and shapes reads almost nothing. Only for a look that ends at once: a
    mapped tensor follows the file if it is rewritten in place. (safetensors files are mapped
    either way.)
    """
    if not scripted_ok and str(path).startswith(TORCHSCRIPT_PREFIX):
        raise InputError(f"checkpoint {path}: {_NOT_SCRIPTED}")
    path = existing_file(path)
    if is_shard_index(path):  # model.safetensors.index.json: every shard it names, as one dict
        return read_sharded(path, lambda shard: read_checkpoint(shard, scripted_ok=scripted_ok, lazy=lazy))
    check_readable_kind(path)  # an empty file, a Git LFS pointer, a .npz archive: named, not parsed
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - every parse failure is a bad user file
            raise InputError(
                f"cannot read checkpoint {path}: not a valid safetensors file ({error})"
            ) from None
    if is_torchscript(path):
        if not scripted_ok:
            raise InputError(f"checkpoint {path} is a TorchScript archive: {_NOT_SCRIPTED}")
        raise InputError(
            f"cannot read checkpoint {path}: it is a TorchScript archive, which runs its own code; "
            f"pass it as '{TORCHSCRIPT_PREFIX}{path}' if you trust it"
        )
    mmap = lazy and zipfile.is_zipfile(path)  # torch.save's zip format since torch 1.6
    try:
        with torch.serialization.safe_globals(metadata_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - pickle / zip / EOF errors all mean "not readable"
        reason = torch_load_reason(error, path)
        pickled = re.search(r"GLOBAL ([\w.]+)", str(error))
        if pickled:  # torch.save(model): a pickled object, rebuilt only by running its code
            raise InputError(
                f"cannot read checkpoint {path}: not a weights-only torch or safetensors file: it holds "
                f"a pickled {pickled.group(1)} object (unpickling runs code); save its weights "
                "instead (torch.save(model.state_dict(), PATH))"
            ) from None
        raise InputError(
            f"cannot read checkpoint {path}: not a weights-only torch or safetensors file ({reason})"
        ) from None


def _is_tensor_dict(state: Mapping) -> bool:
    return bool(state) and all(isinstance(value, torch.Tensor) for value in state.values())


def unwrap_state_dict(payload: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a checkpoint's content (see the module docstring).

    Wrapper keys are followed until a dict of tensors is reached (so epoch counters or optimizer
    state beside it are ignored); a key prefix is stripped only when every key carries it, so a
    model's own ``module`` / ``model`` submodules inside the dict are left alone.
    """
    state = payload
    while isinstance(state, Mapping) and not _is_tensor_dict(state):
        wrapped = next((key for key in WRAPPER_KEYS if isinstance(state.get(key), Mapping)), None)
        if wrapped is None:
            keys = ", ".join(map(str, list(state)[:8])) or "none"
            raise InputError(f"checkpoint {source} holds no state_dict (top-level keys: {keys})")
        state = state[wrapped]
    if not isinstance(state, Mapping):
        raise InputError(f"checkpoint {source} holds a {type(state).__name__}, not a state_dict")
    flat = {str(key): value for key, value in state.items()}
    for prefix in WRAPPER_PREFIXES * 2:  # e.g. "model.module." from a wrapped DataParallel model
        if all(key.startswith(prefix) for key in flat):
            flat = {key[len(prefix) :]: value for key, value in flat.items()}
    return flat


def load_state_dict(
    source: str | Path | Mapping[str, Any], *, scripted_ok: bool = True, lazy: bool = False
) -> dict[str, torch.Tensor]:
    """A flat state_dict from a checkpoint path (any supported format) or an in-memory mapping
    (``lazy``: see `read_checkpoint`)."""
    if isinstance(source, Mapping):
        return unwrap_state_dict(source, "given as a mapping")
    return unwrap_state_dict(read_checkpoint(source, scripted_ok=scripted_ok, lazy=lazy), str(source))


def apply_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    *,
    ignore_unexpected: bool = False,
) -> None:
    """Load ``state`` strictly (after `fit_state_dict`), turning missing / unexpected / mis-shaped
    keys into one `InputError`.

    ``ignore_unexpected``: keys of a timm model's classifier that it holds without weights (a
    headless model's ``Identity`` head) or of layers it lists in a ``dropped_layers`` attribute are
    left out, so an encoder cut from a classifier keeps its trunk only; any other unexpected key (a
    register token, LayerScale, a block or attention pool the model does not have), missing and
    mis-shaped keys are still errors.
    """
    fitted = check_state_dict(model, state, source, ignore_unexpected=ignore_unexpected)
    model.load_state_dict(fitted, strict=True)


def check_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    *,
    ignore_unexpected: bool = False,
) -> dict[str, torch.Tensor]:
    """`apply_state_dict`'s checks alone (they need only shapes: ``model`` may sit on the meta
    device); returns the state to load, keyed exactly as the model's own state_dict."""
    subtree = _subtree(set(model.state_dict()), dict(state), source)
    fitted = _timm_filtered(model, subtree)
    problems = _mismatches(model, fitted, ignore_unexpected)
    if (problems or _other_patches(model, subtree)) and fitted is not subtree:
        # report the file's own names and shapes; patches of another size are another model (timm
        # resamples the patch embedding it is asked to), positions of another grid are not
        plain = _mismatches(model, subtree, ignore_unexpected)
        fitted, problems = subtree, plain
    if problems:
        raise InputError(f"checkpoint {source} {problems}")
    return {key: fitted[key] for key in model.state_dict()}


def _mismatches(model: nn.Module, state: Mapping[str, torch.Tensor], ignore_unexpected: bool) -> str:
    """"does not fit MODEL: missing: ...; unexpected: ...; wrong shape: ..." or "" when it fits."""
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if ignore_unexpected:
        left_out = tuple(f"{name}." for name in _left_out_layers(model))
        extra = [key for key in extra if not key.startswith(left_out)]
    if own and len(missing) == len(own):
        shown = ", ".join(sorted(state)[:3])
        hf = any(".patch_embeddings." in key for key in state)
        return f"does not fit {type(model).__name__}: none of its weights are there " + (
            "(it holds a Hugging Face model: give its folder as hf:FOLDER)"
            if hf
            else f"(the file has {shown}, ...: another architecture?)"
        )
    mis_shaped = sorted(
        f"{key} {tuple(state[key].shape)} vs {own[key]}"
        for key in set(own) & set(state)
        if tuple(state[key].shape) != own[key]
    )
    parts = []
    for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
            parts.append(f"{label}: {shown}")
    if not parts:
        return ""
    from attnmap.architecture_hints import architecture_hints

    parts += architecture_hints(own, state, extra=extra, missing=missing)
    return f"does not fit {type(model).__name__}: " + "; ".join(parts)


def _left_out_layers(model: nn.Module) -> tuple[str, ...]:
    """Layers whose weights a checkpoint may carry and ``model`` leaves out: those it declares in
    ``dropped_layers`` (a truncated ResNet's ``layer4`` and ``fc``) and a timm model's classifier
    (``pretrained_cfg["classifier"]``) when it holds it without weights (headless: ``Identity``).
    Nothing else: an ``Identity`` LayerScale, a missing block or attention pool means another
    architecture, whose weights must not be dropped."""
    names = [str(name) for name in getattr(model, "dropped_layers", ())]
    config = getattr(model, "pretrained_cfg", None)
    classifier = config.get("classifier") if isinstance(config, Mapping) else None
    for name in [classifier] if isinstance(classifier, str) else list(classifier or ()):
        try:
            layer = model.get_submodule(str(name))
        except AttributeError:
            layer = None
        if layer is None or not any(True for _ in itertools.chain(layer.parameters(), layer.buffers())):
            names.append(str(name))
    return tuple(names)


def fit_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The part of a checkpoint that is ``model``, keyed and shaped as timm would load it.

    Why: pathology and self-supervised checkpoints hold the network under a prefix beside other
    networks (``backbone.`` next to a DINO ``head.``, ``student.`` and ``teacher.`` copies, a
    Lightning ``model.encoder.``). The prefix whose stripped keys name most of the model's own keys
    is kept and everything outside it dropped; a tie between copies prefers the one the method
    evaluates (`EVALUATION_COPIES`: DINO's teacher, MoCo v3's base encoder), any other tie is an
    error. A timm model then gets its module's ``checkpoint_filter_fn``, as timm applies to
    pretrained weights (position embeddings resampled to the model's patch grid, original DINOv2 key
    names converted). Nothing is checked here.
    """
    own = set(model.state_dict())
    state = _subtree(own, dict(state), source)
    return _timm_filtered(model, state)


def _other_patches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether the checkpoint's patch embedding is for patches of another size than the model's."""
    weight, own = state.get("patch_embed.proj.weight"), model.state_dict().get("patch_embed.proj.weight")
    return isinstance(weight, torch.Tensor) and own is not None and weight.shape[-2:] != own.shape[-2:]


def _subtree(own: set[str], state: dict[str, torch.Tensor], source: str | Path) -> dict[str, torch.Tensor]:
    state = without_decoder(own, joined_qkv(own, unchunked_blocks(own, state)))
    direct = sum(key in own for key in state)
    if direct == len(own):
        return state
    hits: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for cut in range(1, min(len(parts), 4)):
            if ".".join(parts[cut:]) in own:
                prefix = ".".join(parts[:cut]) + "."
                hits[prefix] = hits.get(prefix, 0) + 1
    best = max(hits.values(), default=0)
    if best <= max(direct, len(own) // 2):  # a few names shared by chance do not make a sub-tree
        return state
    winners = sorted(prefix for prefix, count in hits.items() if count == best)
    if len(winners) > 1:
        evaluated = [prefix for prefix in winners if set(prefix.split(".")) & set(EVALUATION_COPIES)]
        if len(evaluated) != 1:
            raise InputError(
                f"checkpoint {source} holds the model's weights under each of {', '.join(winners)}: "
                "save the copy to use on its own"
            )
        winners = evaluated
    prefix = winners[0]
    inside = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return without_decoder(own, joined_qkv(own, inside))


def _timm_filtered(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` through the ``checkpoint_filter_fn`` of a timm model's module (if it has one)."""
    if getattr(model, "pretrained_cfg", None) is None or not type(model).__module__.startswith("timm."):
        return state
    import importlib
    import logging

    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    quiet = logging.getLogger("timm")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its resampling notes are not the user's concern
    try:
        filtered = filter_fn(dict(state), model)
    except Exception:  # noqa: BLE001 - a layout the filter does not know: the strict check decides
        return state
    finally:
        quiet.setLevel(level)
    return filtered if isinstance(filtered, Mapping) and _is_tensor_dict(filtered) else state


def load_torchscript(path: str | Path) -> nn.Module:
    """A TorchScript module; only for files the user named as ``torchscript:PATH``."""
    path = existing_file(str(path).removeprefix(TORCHSCRIPT_PREFIX))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still in use
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any failure means "not a TorchScript archive"
        raise InputError(
            f"cannot read checkpoint {path}: not a TorchScript archive ({torch_load_reason(error, path)})"
        ) from None


# the per-process model cache lives in attnmap.model_cache; its names stay importable from here
from attnmap.model_cache import (  # noqa: E402
    MODEL_CACHE,
    ModelCache,
    cached_clam,
    cached_encoder,
    cached_model,
    cached_vit,
    file_stamp,
)

__all__ = [
    "MODEL_CACHE",
    "TORCHSCRIPT_PREFIX",
    "ModelCache",
    "apply_state_dict",
    "cached_clam",
    "cached_encoder",
    "cached_model",
    "cached_vit",
    "check_state_dict",
    "file_stamp",
    "fit_state_dict",
    "is_torchscript",
    "load_state_dict",
    "load_torchscript",
    "read_checkpoint",
    "unwrap_state_dict",
]
