"""Building a timm architecture from its name and plain arguments (YAML, ``--model-arg``), offline.

Why: the foundation models pathologists run are timm architectures with non-default arguments
(UNI: ``init_values=1e-5``; Virchow2: ``mlp_layer=SwiGLUPacked, act_layer=SiLU, reg_tokens=4``;
H-optimus: registers and LayerScale). A configuration file or a command line can only hold plain
values, so the layer arguments timm takes as classes are named by string here (``mlp_layer:
SwiGLUPacked``, ``act_layer: silu``, ``norm_layer: rmsnorm``) and resolved through timm's own
registries. One builder serves `attnmap.load_model` and the slide pipeline's encoders, so both read
the same names and refuse the same mistakes in one line.

One pooling is added to timm's: ``global_pool="class_and_patch_mean"``, the class token concatenated
with the mean of the patch tokens (registers left out), which is the embedding Virchow and Virchow2
publish (2 × width) and so the feature size of the MIL models trained on them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from attnmap.errors import InputError

CLASS_AND_PATCH_MEAN = "class_and_patch_mean"

LAYER_ARGUMENTS = ("mlp_layer", "act_layer", "norm_layer")
# timm's MLP blocks a ViT takes as ``mlp_layer`` (by class name)
MLP_LAYERS = ("Mlp", "GluMlp", "SwiGLU", "SwiGLUPacked", "GatedMlp")
# those whose activation gates the values: a ViT hands them its own act_layer (GELU unless given),
# which replaces the block's default (SwiGLUPacked's SiLU), and no weight shape tells which it was
GATED_MLP_LAYERS = ("GluMlp", "SwiGLU", "SwiGLUPacked")


def check_timm_name(name: str) -> None:
    """`InputError` for a name timm does not know, listing the names closest to it (typos)."""
    import timm

    if name.startswith(("hf-hub:", "hf_hub:")):
        raise InputError(
            f"{name!r} is a download from the Hugging Face hub, which attnmap never does: give the "
            "architecture's timm name (and its arguments) with the weights you downloaded as the checkpoint"
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
        raise InputError(f"timm has no model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))


def timm_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with the layer arguments given by name resolved to timm's classes.

    A gated ``mlp_layer`` named without ``act_layer`` is refused: the model would load the weights
    and silently gate with GELU (timm's ViT default), not the SiLU SwiGLU models were trained with.
    """
    from timm import layers

    mlp = str(arguments.get("mlp_layer", "")).rsplit(".", 1)[-1]
    if mlp in GATED_MLP_LAYERS and "act_layer" not in arguments:
        raise InputError(
            f"mlp_layer {mlp} needs its act_layer: the activation its gate was trained with (silu for "
            "Virchow2 and other SwiGLU models; gelu is what the ViT would use unless told)"
        )
    resolved = dict(arguments)
    for key, value in arguments.items():
        if not isinstance(value, str):
            continue
        if key in LAYER_ARGUMENTS:  # a class path as saved configs write it: timm.layers.SwiGLUPacked
            value = value.rsplit(".", 1)[-1]
        if key == "mlp_layer":
            if value not in MLP_LAYERS:
                blocks = ", ".join(MLP_LAYERS)
                raise InputError(f"mlp_layer {value!r} is not one of timm's MLP blocks: {blocks}")
            resolved[key] = getattr(layers, value)
        elif key in ("act_layer", "norm_layer"):
            lookup = layers.get_act_layer if key == "act_layer" else layers.get_norm_layer
            examples = "gelu, silu, quick_gelu" if key == "act_layer" else "layernorm, rmsnorm"
            try:
                resolved[key] = lookup(value.lower() if key == "act_layer" else value)
            except (KeyError, ValueError, AssertionError):
                raise InputError(f"{key} {value!r} is not a name timm knows (e.g. {examples})") from None
    return resolved


def build_timm(name: str, arguments: Mapping[str, Any] | None = None, **fixed: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **arguments, **fixed)``, never downloading (and
    the ``class_and_patch_mean`` pooling, see the module docstring). An unknown name or arguments
    the architecture refuses (an unknown keyword, heads that do not divide the width, a negative
    depth) are one `InputError` line naming the user's ``arguments``; ``fixed``: what the caller
    sets (e.g. ``num_classes=0`` for a patch encoder)."""
    import timm

    check_timm_name(name)
    arguments = dict(arguments or {})
    resolved = {**timm_arguments(arguments), **fixed}
    concat = resolved.get("global_pool") == CLASS_AND_PATCH_MEAN
    if concat:
        if resolved.get("num_classes", 0):
            raise InputError(
                f"global_pool={CLASS_AND_PATCH_MEAN!r} gives an embedding: build it with num_classes=0"
            )
        resolved.update(global_pool="", num_classes=0)
    try:
        model = timm.create_model(name, pretrained=False, **resolved)
    except Exception as error:  # noqa: BLE001 - timm asserts, raises TypeError/ValueError/RuntimeError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot build timm model {name!r} with {arguments}: {reason}") from None
    return _class_and_patch_mean(model, name) if concat else model


class ClassAndPatchMeanViT(VisionTransformer):
    """A timm VisionTransformer whose pooled output is [class token, mean of the patch tokens]."""

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        from attnmap.vit.readout import read_tokens

        return read_tokens(x, "cls_and_patch_mean", self.num_prefix_tokens)


def _class_and_patch_mean(model: nn.Module, name: str) -> nn.Module:
    """``model`` reading out [class token, patch-token mean]: its class switched, its weights and
    state_dict keys unchanged (so checkpoints of the architecture load as they are)."""
    if type(model) is not VisionTransformer or model.cls_token is None:
        what = type(model).__name__ + (" without one" if type(model) is VisionTransformer else "")
        raise InputError(
            f"global_pool={CLASS_AND_PATCH_MEAN!r} needs a timm VisionTransformer with a class token; "
            f"{name} is a {what}"
        )
    model.__class__ = ClassAndPatchMeanViT
    return model
