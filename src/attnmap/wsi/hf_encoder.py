"""Hugging Face vision models as patch encoders: ``hf:FOLDER`` in the slide pipeline.

Pathology encoders published in the Hugging Face layout (Phikon: ViTModel; Phikon-v2, Hibou,
Midnight: DINOv2; DINOv3; PLIP: CLIP) run as saved with ``save_pretrained``: the folder's
``config.json`` names the model class (read by `attnmap.vit.models.load_model`, the rule `explain`
follows, nothing downloaded), its ``preprocessor_config.json`` the input size and normalisation.

The feature vector is a read-out of the model's output, named by the ``readout`` encoder argument,
because each encoder's authors use a different one and a MIL head trained on one read-out is wrong
on another:

- ``cls`` (default): the class token of ``last_hidden_state`` (Phikon, Phikon-v2, Hibou, DINOv2/v3);
  refused for a model without one (SigLIP);
- ``pooler``: ``pooler_output`` (a CLIP vision tower's normed class token, also of a full CLIP folder
  such as PLIP's; ViTModel's tanh pooler, absent from Phikon; SigLIP's attention-pool head);
- ``patch_mean``: the mean of the patch tokens (class and register tokens left out);
- ``cls_and_patch_mean``: both, concatenated (Midnight, Virchow-style 2·D features);
- ``embeds``: ``image_embeds`` of a model with a projection (CLIPVisionModelWithProjection, PLIP).

Fine maps run on a timm twin of ViT, DINOv2 and CLIP vision encoders (`HFPatchEncoder.fine_twin`).
The input size must be a whole number of patches: a Hugging Face ViT given more leaves the remainder
out.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.readout import read_tokens

HF_PREFIX = "hf:"
READOUTS = ("cls", "pooler", "patch_mean", "cls_and_patch_mean", "embeds")


class HFPatchEncoder(nn.Module):
    """(B, 3, H, W) patches → (B, D) features: ``readout`` of the Hugging Face model's output."""

    def __init__(
        self,
        model: nn.Module,
        readout: str,
        num_prefix_tokens: int,
        input_size: int,
        resample_positions: bool,
    ):
        super().__init__()
        self.model = model
        self.readout = readout
        self.num_prefix_tokens = num_prefix_tokens
        self.input_size = input_size
        # ViT-style models take another input size only when asked to resample their positions
        self.resample_positions = resample_positions
        self.__dict__["_fine_twin"] = None  # not a submodule: no second copy in state_dict or .to()

    def fine_twin(self) -> nn.Module:
        """The timm VisionTransformer computing these features (`attnmap.wsi.hf_timm_twin`), which the
        fine maps' conservative relevance runs on; built once, checked against this forward."""
        weight = next(self.model.parameters())
        twin = self._fine_twin
        if twin is None or (twin.pos_embed.dtype, twin.pos_embed.device) != (weight.dtype, weight.device):
            from attnmap.errors import UnsupportedModelError
            from attnmap.wsi.hf_timm_twin import timm_twin

            twin = timm_twin(self.model, self.readout, self.input_size)
            generator = torch.Generator().manual_seed(0)
            probe = torch.randn(2, 3, self.input_size, self.input_size, generator=generator)
            probe = probe.to(device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                ours, theirs = twin(probe), self(probe)
            if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4):
                raise UnsupportedModelError(
                    f"the timm twin of {type(self.model).__name__} differs from its forward: no fine maps"
                )
            self.__dict__["_fine_twin"] = twin
        return self._fine_twin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        options = {"interpolate_pos_encoding": True} if self.resample_positions else {}
        model = self.model
        if self.readout == "pooler" and hasattr(model, "visual_projection"):
            # a tower with a projection (PLIP's CLIP) returns image_embeds only: its pooled
            # output is that of the transformer inside it, before the projection
            model = model.vision_model
        output = model(pixel_values=images, **options)
        if self.readout in ("pooler", "embeds"):
            features = getattr(output, "pooler_output" if self.readout == "pooler" else "image_embeds", None)
            if features is None:
                raise InputError(f"readout {self.readout!r}: {type(self.model).__name__} gives none")
            return features
        return read_tokens(output.last_hidden_state, self.readout, self.num_prefix_tokens)


def hf_folder(name: str) -> Path | None:
    """The folder of an ``hf:FOLDER`` encoder name, None for any other name."""
    return Path(name[len(HF_PREFIX) :]) if name.startswith(HF_PREFIX) else None


def check_readout(arguments: dict[str, object]) -> str:
    """The ``readout`` encoder argument (the only one an ``hf:`` encoder takes), checked."""
    others = sorted(set(arguments) - {"readout"})
    if others:
        raise InputError(
            f"encoder arguments ({', '.join(others)}) apply to timm architectures; an hf: encoder takes "
            f"only readout ({', '.join(READOUTS)})"
        )
    readout = arguments.get("readout", "cls")
    if readout not in READOUTS:
        raise InputError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    return str(readout)


def hf_encoder(
    name: str, arguments: dict[str, object], checkpoint: str | Path | None, input_size: int | None
) -> tuple[HFPatchEncoder, int, tuple[float, ...], tuple[float, ...], str]:
    """(encoder module, input size, mean, std, interpolation) of ``hf:FOLDER``."""
    from attnmap.vit.adapters_hf import HFAdapter
    from attnmap.vit.models import load_model
    from attnmap.vit.preprocess import data_config

    readout = check_readout(arguments)
    folder = hf_folder(name)
    if folder is None or not (folder / "config.json").is_file():
        raise InputError(f"{name} is not a local Hugging Face model folder (no config.json)")
    model = load_model(name, checkpoint)
    if "ForImageClassification" in type(model).__name__:
        model = getattr(model, model.base_model_prefix)  # the trunk: features, not class logits
    if readout == "embeds" and not hasattr(model, "visual_projection"):
        kind = type(model).__name__
        raise InputError(f"readout 'embeds' needs a model with a projection; {name} holds a {kind}")
    if readout == "pooler" and getattr(model, "pooler", True) is None:  # ViTModel saved without one
        raise InputError(
            f"readout 'pooler': {type(model).__name__} gives none ({name} has no pooler: Phikon and "
            "image classifiers are saved without one); use readout cls"
        )
    adapter = HFAdapter(model)
    if readout in ("cls", "cls_and_patch_mean") and adapter.num_prefix_tokens == 0:
        # SigLIP: the first token is a patch's, not a summary of the image
        raise InputError(
            f"readout {readout!r}: {type(model).__name__} has no class token; use pooler or patch_mean"
        )
    config = data_config(model)
    size = input_size or int(config["input_size"][-1])
    patch = max(adapter.patch_size, key=lambda side: size % side)
    if size % patch or size < patch:
        # a Hugging Face ViT takes such inputs and drops the pixels past the last whole patch:
        # features of part of each patch, silently
        raise InputError(
            f"input_size {size} is not a multiple of {name}'s {patch}-px patches: the model would "
            f"leave the last {size % patch} pixel rows and columns of every patch out"
        )
    resample = adapter._takes_interpolate and (size, size) != adapter.image_size
    module = HFPatchEncoder(model, readout, adapter.num_prefix_tokens, size, resample)
    interpolation = str(config.get("interpolation", "bilinear"))
    return module, size, tuple(config["mean"]), tuple(config["std"]), interpolation
